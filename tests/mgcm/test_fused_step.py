"""A fused step (``data.fusion: zip``): one audio batch (ST, ASR) and one text batch (MT) in one training
step, so that every task's loss is in it and MGCM projects the MT gradient off ST's too; on a tiny SALM-T5."""

import pytest
import torch
from lightning.pytorch.utilities import move_data_to_device

from nemo_emmett.data.batch import FusedBatch
from nemo_emmett.mgcm.projection import combine, pair_stats
from nemo_emmett.models.salm_t5 import SalmT5
from tests.conftest import synced_module_view
from tests.mgcm.test_mgcm_step import by_module, close, fit, run_hooked_backward, st_asr_batch
from tests.models.test_salm_t5 import text_batch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def mgcm_cfg(tiny_cfg):
    return {**tiny_cfg, "mgcm": {"enabled": True, "primary_task": "st", "log_every_n_steps": 1}}


def fused(model, tasks=("asr", "st", "st", "asr")):
    return FusedBatch(audio=st_asr_batch(model, tasks), text=text_batch(model))


def test_a_fused_batch_reaches_every_task_s_loss(tiny_cfg):
    model = SalmT5(tiny_cfg).eval()
    batch = fused(model)
    assert len(batch) == 7 and batch.tasks == ["asr", "st", "st", "asr", "mt", "mt", "mt"]
    assert isinstance(move_data_to_device(batch, torch.device("cpu")).text.source_ids, torch.Tensor)
    loss = model.batch_loss(batch)
    audio, text = model.batch_loss(batch.audio), model.batch_loss(batch.text)
    # defined as one batch of both batches' examples: token-averaged NLL, CTC over the audio examples
    nll = (audio.nll.sum() + text.nll.sum()) / (audio.tokens.sum() + text.tokens.sum())
    assert torch.allclose(loss.total(), nll + 0.3 * audio.aux["ctc"].mean(), rtol=1e-6)
    assert set(loss.logged()) == {"asr", "st", "mt", "ctc"}
    shares = loss.task_shares()
    assert set(shares) == {"asr", "st", "mt"}
    assert torch.allclose(sum(shares.values()), loss.total(), rtol=1e-6)
    # MT's share stays in the text batch's graph: no gradient (not even zeros) reaches the speech perception
    shares["mt"].backward(retain_graph=True)
    assert all(p.grad is None for p in model.perception.parameters())
    assert any(p.grad is not None and p.grad.any() for p in model.backbone.parameters())


def test_without_mgcm_lightning_trains_on_fused_steps(tiny_cfg):
    model = SalmT5(tiny_cfg)
    trainer = fit(model, [fused(model)], steps=2)
    metrics = trainer.callback_metrics
    assert trainer.global_step == 2
    for key in ("train_loss", "train_loss/st", "train_loss/asr", "train_loss/mt", "batch_size/audio", "batch_size/text"):
        assert key in metrics, sorted(metrics)
    assert float(metrics["batch_size/text"]) == 3.0


def test_mgcm_projects_the_mt_gradient_off_st_in_a_fused_step(mgcm_cfg):
    model = SalmT5(mgcm_cfg).eval()
    batch = fused(model, tasks=("st", "st"))  # ST and MT only: .grad = g_st + project(g_mt)
    groups, grads, stats = run_hooked_backward(model, batch)
    assert set(stats) == {"mt"}
    conflicting = 0
    for m, members in groups.items():
        st = [grads["st"][p] for p in members]
        if all(g is None for g in st):
            continue
        before = pair_stats(st, [grads["mt"][p] for p in members])
        projected_mt = [p.grad - (g if g is not None else 0) for p, g in zip(members, st)]
        after = pair_stats(st, projected_mt)
        if float(before.dot) < 0:
            conflicting += 1
        else:  # no conflict: MT's gradient passes unchanged
            assert all(g is None or close(q, g) for q, g in zip(projected_mt, (grads["mt"][p] for p in members))), m
        assert float(after.dot) >= -1e-6 * float(before.primary_sq.sqrt() * before.aux_sq.sqrt()), m
    assert conflicting > 0  # random init: MT conflicts with ST somewhere, and that was projected away


def test_mgcm_with_st_asr_and_mt_projects_both_auxiliaries(mgcm_cfg):
    model = SalmT5(mgcm_cfg).eval()
    groups, grads, stats = run_hooked_backward(model, fused(model))
    assert set(stats) == {"asr", "mt"}
    reference = combine(by_module(grads["st"], groups), {t: by_module(grads[t], groups) for t in ("asr", "mt")})
    for m, members in groups.items():
        for p, expected in zip(members, reference[m]):
            if expected is not None:
                assert close(p.grad, expected), m


def test_lightning_fit_with_mgcm_logs_st_mt_conflicts(mgcm_cfg):
    model = SalmT5(mgcm_cfg)
    trainer = fit(model, [fused(model)], steps=2)
    metrics = trainer.callback_metrics
    assert trainer.global_step == 2 and model.mgcm.skipped_steps == 0
    assert "mgcm/st-mt/conflict_share" in metrics and "mgcm/st-asr/conflict_share" in metrics, sorted(metrics)


def test_synced_path_projects_mt_of_a_fused_step_on_a_modular_model(spm_path, tmp_path):
    """``trainer.strategy: component_sync`` (mgcm/sync.py, one gloo rank): a fused step's MT gradient,
    routed to the MT task's components, is projected like ASR's: the reference projection's update."""
    from types import SimpleNamespace

    import torch.distributed as dist

    from nemo_emmett.mammoth.modular import ModularTranslation
    from nemo_emmett.mgcm.sync import synced_backward
    from tests.mammoth.test_modular import assert_grads_equal, modular_cfg, task
    from tests.mammoth.test_modular import text_batch as modular_text_batch
    from tests.mgcm.test_mgcm_step import per_task_grads

    enc = ["encoder.0.en", "encoder.1.full"]
    cfg = modular_cfg(spm_path, [task("st_en-de", "st", "en", "de", enc, ["decoder.0.full", "decoder.1.de"],
                                      perception="perception.full"),
                                 task("asr_en-en", "asr", "en", "en", enc, ["decoder.0.full", "decoder.1.en"],
                                      perception="perception.full"),
                                 task("mt_en-de", "mt", "en", "de", enc, ["decoder.0.full", "decoder.1.de"])])
    cfg["mgcm"] = {"enabled": True, "granularity": "component", "primary_task": "st"}
    model = ModularTranslation(cfg).eval()
    batch = FusedBatch(audio=st_asr_batch(model), text=modular_text_batch(model, [("en", "de")] * 2))
    named = dict(model.named_parameters())
    groups = {m: [named[n] for n in members] for m, members in model.mgcm.groups.items()}
    loss = model.batch_loss(batch)
    grads = per_task_grads(model, loss.task_shares(), [p for members in groups.values() for p in members])
    reference = combine(by_module(grads["st"], groups), {t: by_module(grads[t], groups) for t in ("asr", "mt")})
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        stats = synced_backward(synced_module_view(model), SimpleNamespace(sync=lambda ps: None), batch,
                                loss.task_shares(), "st", groups)
    finally:
        dist.destroy_process_group()
    assert set(stats) == {"asr", "mt"}
    assert model.components_reached(batch, "mt") == {"embed.full", *enc, "decoder.0.full", "decoder.1.de"}
    assert_grads_equal(groups, reference)
