"""ModularTranslation: components per task, sparse steps, routing, decoding, errors."""

from __future__ import annotations

import copy

import pytest
import torch

from nemo_emmett.data.dataset import collate
from nemo_emmett.data.examples import make_text_example
from nemo_emmett.data.sampler import Batch
from nemo_emmett.mammoth.modular import ModularTranslation
from nemo_emmett.parts.optim import build_optimizer_and_scheduler
from tests.conftest import TINY_PERCEPTION, synced_module_view


def task(name, t, s, g, enc, dec, perception=None, prompt="<{target_lang}>"):
    return {"name": name, "task": t, "source_lang": s, "target_lang": g, "encoder": enc, "decoder": dec,
            "perception": perception, "prompt": prompt}


TASKS = [
    task("mt_en-de", "mt", "en", "de", ["encoder.0.en", "encoder.1.full"], ["decoder.0.full", "decoder.1.de"]),
    task("mt_de-en", "mt", "de", "en", ["encoder.0.de", "encoder.1.full"], ["decoder.0.full", "decoder.1.en"]),
    task("mt_en-fr", "mt", "en", "fr", ["encoder.0.en", "encoder.1.full"], ["decoder.0.full", "decoder.1.fr"],
         prompt=""),
]


def modular_cfg(spm_path, tasks=TASKS, **modular):
    return {"tokenizer": {"spm_path": spm_path}, "perception": dict(TINY_PERCEPTION),
            "optim": {"optimizer": {"_target_": "torch.optim.AdamW", "lr": 1e-2, "weight_decay": 0.1},
                      "lr_scheduler": None},
            "modular": {"d_model": 32, "n_heads": 4, "d_ff": 64, "dropout": 0.0, "encoder_layers": [1, 1],
                        "decoder_layers": [1, 1], "tasks": copy.deepcopy(tasks), **modular}}


def text_batch(model, directions, texts=("one hundred and nine", "hundert neun")):
    exs = [make_text_example(example_id=f"x{i}", source_text=texts[i % 2], target_text=texts[(i + 1) % 2],
                             source_lang=s, target_lang=g, dataset="d") for i, (s, g) in enumerate(directions)]
    return collate(Batch("text", 0, 99, 99, exs, [(1, 1)] * len(exs)), sampling_rate=16000, text=model.text)


@pytest.fixture
def model(spm_path, one_torch_thread):
    torch.manual_seed(0)
    return ModularTranslation(modular_cfg(spm_path))


def test_components_are_built_once_and_named(model):
    assert sorted(model.component_modules()) == sorted([
        "embed.full", "encoder.0.en", "encoder.0.de", "encoder.1.full", "decoder.0.full", "decoder.1.de",
        "decoder.1.en", "decoder.1.fr"])
    assert model.perception is None  # no audio task: no speech encoder
    owners = model.component_of()
    assert set(owners.values()) == set(model.component_modules())
    assert owners["backbone.components.encoder.1.full.layers.0.attn.q.weight"] == "encoder.1.full"
    sizes = model.parameters_per_task()
    assert sizes["mt_en-de"] == sizes["mt_de-en"] == sizes["mt_en-fr"]
    assert sizes["mt_en-de"] < sum(p.numel() for p in model.parameters())


def test_a_step_touches_exactly_its_task_components(model):
    opt = build_optimizer_and_scheduler(model, model.cfg.optim)["optimizer"]
    for directions in ([("en", "de"), ("de", "en"), ("en", "fr")], [("en", "de"), ("en", "de")]):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        state_steps = {n: float(opt.state[p]["step"]) if p in opt.state else 0.0 for n, p in model.named_parameters()}
        opt.zero_grad(set_to_none=True)
        loss, _ = model.task_losses(text_batch(model, directions))
        loss.backward()
        opt.step()
    used = set(model.tasks["mt:en-de"].components())
    owners = model.component_of()
    for n, p in model.named_parameters():
        if owners[n] in used:
            assert p.grad is not None, n
            assert float(opt.state[p]["step"]) == state_steps[n] + 1, n
        else:  # no gradient, no update (AdamW's weight decay included), Adam state untouched
            assert p.grad is None, n
            assert torch.equal(p, before[n]), n
            assert float(opt.state[p]["step"]) == state_steps[n], n
    changed = {owners[n] for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == used


def test_a_mixed_batch_routes_each_example_to_its_task(model):
    model.eval()
    mixed = text_batch(model, [("en", "de"), ("de", "en"), ("en", "fr"), ("en", "de")])
    logits, _ = model.logits(mixed)
    for i, direction in enumerate([("en", "de"), ("de", "en"), ("en", "fr"), ("en", "de")]):
        alone = text_batch(model, [direction], texts=(mixed.source_texts[i], mixed.target_texts[i]))
        ref, _ = model.logits(alone)
        n = int(alone.target_lens[0])
        torch.testing.assert_close(logits[i, :n], ref[0, :n], atol=1e-5, rtol=1e-5)


def test_prompts_follow_each_task(model):
    b = text_batch(model, [("en", "de"), ("en", "fr")])
    assert b.prompt_lens.tolist()[1] == 0  # mt_en-fr has no tag
    assert b.prompt_lens.tolist()[0] >= 1


def test_cached_decoding_matches_teacher_forcing(model):
    model.eval()
    b = text_batch(model, [("de", "en")])
    t = model.tasks["mt:de-en"]
    memory, mask = model.encode(b, t, None)
    tokens = torch.cat([torch.full((1, 1), model.text.pad_id), b.target_ids[:, :-1]], dim=1)  # (1, U)
    full = model.decode_states(t, tokens, memory, mask)
    from nemo_emmett.modules.transformer import KVCache

    cache = KVCache([None] * 2, [None] * 2)
    steps = [model.decode_states(t, tokens[:, i : i + 1], memory, mask, cache, i) for i in range(tokens.shape[1])]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_greedy_and_beam_decode_in_batch_order(model):
    model.eval()
    b = text_batch(model, [("en", "de"), ("de", "en"), ("en", "fr")])
    greedy = model.generate_ids(b)
    assert len(greedy) == 3 and all(isinstance(r, list) for r in greedy)
    for i in range(3):  # each example decodes the same alone as in the mixed batch
        alone = b.take_rows(torch.tensor([i]))
        assert model.generate_ids(alone) == [greedy[i]]
    model.cfg.decoding.beam_size = 3
    assert len(model.generate_ids(b)) == 3


def test_unknown_direction_in_a_batch_is_an_error_naming_it(model):
    with pytest.raises(KeyError, match="no modular task for direction mt:fr-de"):
        text_batch(model, [("fr", "de")])


def test_mgcm_component_granularity_uses_the_component_names(spm_path, one_torch_thread):
    cfg = modular_cfg(spm_path)
    cfg["mgcm"] = {"enabled": True, "granularity": "component", "primary_task": "st"}
    model = ModularTranslation(cfg)
    assert sorted(model.mgcm.groups) == sorted(model.component_modules())
    owners = model.component_of()
    for name, members in model.mgcm.groups.items():
        assert {owners[m] for m in members} == {name}


def test_audio_tasks_share_one_perception(spm_path, one_torch_thread):
    tasks = [*TASKS, task("st_en-de", "st", "en", "de", ["encoder.0.en", "encoder.1.full"],
                          ["decoder.0.full", "decoder.1.de"], perception="perception.full")]
    model = ModularTranslation(modular_cfg(spm_path, tasks))
    assert model.perception is not None
    assert "perception.full" in model.component_modules()
    assert model.parameters_per_task()["st_en-de"] > model.parameters_per_task()["mt_en-de"]


@pytest.mark.parametrize("edit, message", [
    (lambda t: t[0].update(encoder=["encoder.0.en"]), r"1 encoder components .* has 2 positions"),
    (lambda t: t[0].update(decoder=["decoder.1.de", "decoder.0.full"]), r"decoder\[0\] is 'decoder.1.de'"),
    (lambda t: t[1].update(name="mt_en-de"), "task name is used twice"),
    (lambda t: t[1].update(source_lang="en", target_lang="de"), "direction mt:en-de is already task"),
    (lambda t: t[0].update(task="st"), "an st task needs perception"),
    (lambda t: t[0].update(perception="perception.full"), "a text task has no perception"),
    (lambda t: t[0].update(source_embed="encoder.0.en"), "source_embed 'encoder.0.en' is not an embed"),
    (lambda t: t[0].update(encoder=["encoder.0.e n", "encoder.1.full"]), "is not of the form"),
])
def test_bad_task_tables_name_the_culprit(spm_path, edit, message):
    tasks = copy.deepcopy(TASKS)
    edit(tasks)
    with pytest.raises(ValueError, match=message):
        ModularTranslation(modular_cfg(spm_path, tasks))


def test_unknown_task_in_devices_is_an_error(spm_path):
    with pytest.raises(ValueError, match=r"devices names unknown task\(s\) \['mt_xx'\]"):
        ModularTranslation(modular_cfg(spm_path, devices=[["mt_en-de"], ["mt_xx"]]))


def test_oomptimizer_probes_a_modular_model_with_its_heaviest_task(spm_path, tmp_path, one_torch_thread):
    from nemo_emmett.oomptimizer import OOMptimizerConfig, ProbeSetting, plan_batch_sizes

    tasks = [*TASKS, task("st_en-de", "st", "en", "de", ["encoder.0.en", "encoder.1.full"],
                          ["decoder.0.full", "decoder.1.de"], perception="perception.full")]
    model = ModularTranslation(modular_cfg(spm_path, tasks))
    assert model.probe_direction("audio") == ("st", "en", "de")
    assert model.probe_direction("text")[0] == "mt"
    setting = ProbeSetting(device=torch.device("cpu"), precision="32-true", gradient_clip_val=1.0)
    cfg = OOMptimizerConfig(memory_budget=12 * 2**20, cache_dir=str(tmp_path / "cache"), tolerance=0.25)
    result = plan_batch_sizes(model, {"audio": [(12.0, 4.0)], "text": [(8.0, 8.0)]}, setting, cfg, progress=False)
    for modality in ("audio", "text"):
        (row,) = result.buckets[modality]
        assert row.batch_size >= 1 and row.peak <= result.budget


def st_asr_model(spm_path):
    """ST en->de and ASR en sharing perception, embeddings and all but the last decoder stack; MGCM per component."""
    tasks = [task("st_en-de", "st", "en", "de", ["encoder.0.en", "encoder.1.full"], ["decoder.0.full", "decoder.1.de"],
                  perception="perception.full"),
             task("asr_en-en", "asr", "en", "en", ["encoder.0.en", "encoder.1.full"], ["decoder.0.full", "decoder.1.en"],
                  perception="perception.full")]
    cfg = modular_cfg(spm_path, tasks)
    cfg["mgcm"] = {"enabled": True, "granularity": "component", "primary_task": "st"}
    return ModularTranslation(cfg).eval()


def assert_grads_equal(groups, reference):
    """``.grad`` equals the reference update per module (zero or missing where the reference has none)."""
    for m, members in groups.items():
        for p, expected in zip(members, reference[m]):
            if expected is None or not expected.any():
                assert p.grad is None or not p.grad.any(), m
            else:
                torch.testing.assert_close(p.grad, expected, rtol=1e-5, atol=1e-7)


def test_mgcm_projects_per_component_and_only_where_tasks_share_one(spm_path, one_torch_thread):
    from nemo_emmett.mgcm.projection import combine
    from tests.mgcm.test_mgcm_step import by_module, run_hooked_backward, st_asr_batch

    model = st_asr_model(spm_path)
    batch = st_asr_batch(model)
    groups, grads, stats = run_hooked_backward(model, batch)

    def reaches(task, members):  # a task's examples reach a component (zeros flow back through the routing)
        return any(grads[task][p] is not None and bool(grads[task][p].any()) for p in members)

    both = {m for m, members in groups.items() if reaches("st", members) and reaches("asr", members)}
    assert both == {"perception.full", "embed.full", "encoder.0.en", "encoder.1.full", "decoder.0.full"}
    reference = combine(by_module(grads["st"], groups), {"asr": by_module(grads["asr"], groups)})
    assert_grads_equal(groups, reference)
    dot, pp, aa = stats["asr"].unbind(1)
    in_both = torch.tensor([m in both for m in groups])
    assert not ((dot != 0) & ~in_both).any()  # a task-specific decoder stack is never compared


def test_mgcm_synced_path_projects_synchronised_task_gradients(spm_path, tmp_path, one_torch_thread):
    """mgcm/sync.py on one gloo rank (the sync is then the identity): the same update as the
    reference projection of per-task gradients."""
    from types import SimpleNamespace

    import torch.distributed as dist

    from nemo_emmett.mgcm.projection import combine
    from nemo_emmett.mgcm.sync import synced_backward
    from tests.mgcm.test_mgcm_step import by_module, per_task_grads, st_asr_batch

    model = st_asr_model(spm_path)
    batch = st_asr_batch(model)
    named = dict(model.named_parameters())
    groups = {m: [named[n] for n in members] for m, members in model.mgcm.groups.items()}
    params = [p for members in groups.values() for p in members]
    loss = model.batch_loss(batch)
    grads = per_task_grads(model, loss.task_shares(), params)
    reference = combine(by_module(grads["st"], groups), {"asr": by_module(grads["asr"], groups)})
    syncs = []

    def seen():  # which task-specific decoder stacks hold a gradient when a task's gradient is synchronised
        return {m: any(p.grad is not None for p in groups[m]) for m in ("decoder.1.de", "decoder.1.en")}

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        stats = synced_backward(synced_module_view(model),
                                SimpleNamespace(sync=lambda ps: syncs.append((seen(), len(ps)))), batch,
                                loss.task_shares(), "st", groups)
    finally:
        dist.destroy_process_group()
    # one sync per task, asr then st; the zeros routed back to the other task's stack are not a use
    assert syncs == [({"decoder.1.de": False, "decoder.1.en": True}, len(params)),
                     ({"decoder.1.de": True, "decoder.1.en": False}, len(params))]  # every parameter, each time
    assert_grads_equal(groups, reference)
    dot, pp, aa = stats["asr"].unbind(1)
    names = list(groups)
    assert float(pp[names.index("decoder.1.en")]) == 0.0  # st never reaches the ASR decoder stack


def test_an_audio_batch_on_a_text_only_model_is_a_clear_error(model, spm_path):
    from types import SimpleNamespace

    from nemo_emmett.parts.text_processor import TextProcessor
    from tests.mgcm.test_mgcm_step import st_asr_batch

    batch = st_asr_batch(SimpleNamespace(text=TextProcessor(spm_path=spm_path)))  # collated without task prompts
    with pytest.raises(ValueError, match="an audio batch reached a model without speech perception"):
        model.logits(batch)


def test_directions_with_one_route_run_as_one_sub_batch(spm_path, one_torch_thread):
    """en-de and en-fr run the same components (only prompts differ): one pass for both, outputs as
    if each ran alone; de-en, with its own encoder layer, is its own sub-batch."""
    shared = ["encoder.0.en", "encoder.1.full"], ["decoder.0.full", "decoder.1.full"]
    tasks = [task("mt_en-de", "mt", "en", "de", *shared), task("mt_en-fr", "mt", "en", "fr", *shared),
             task("mt_de-en", "mt", "de", "en", ["encoder.0.de", "encoder.1.full"], shared[1])]
    torch.manual_seed(0)
    m = ModularTranslation(modular_cfg(spm_path, tasks)).eval()
    directions = [("en", "de"), ("en", "fr"), ("de", "en"), ("en", "fr")]
    mixed = text_batch(m, directions)
    groups = m.task_groups(mixed)
    assert [idx.tolist() for _, idx in groups] == [[0, 1, 3], [2]]
    calls = []
    m.backbone["encoder.1.full"].register_forward_hook(lambda mod, args, out: calls.append(out.shape[0]))
    logits, _ = m.logits(mixed)
    assert calls == [3, 1]  # the shared encoder layer: one pass per route, not per direction
    for i, d in enumerate(directions):
        alone = text_batch(m, [d], texts=(mixed.source_texts[i], mixed.target_texts[i]))
        ref, _ = m.logits(alone)
        n = int(alone.target_lens[0])
        torch.testing.assert_close(logits[i, :n], ref[0, :n], atol=1e-5, rtol=1e-5)
