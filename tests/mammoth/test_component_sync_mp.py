"""Component sync across 2 gloo processes started by the test."""

from __future__ import annotations

import pytest
import torch

from tests.mammoth.workers import (
    HELD,
    lightning_worker,
    local_loss,
    make_component,
    run_workers,
    sync_step_worker,
)


def reference_step() -> dict[str, dict[str, torch.Tensor]]:
    """One process: every rank's gradient computed apart, averaged over the ranks that used each
    component, then the same SGD step."""
    names = sorted({n for held in HELD.values() for n in held})
    start = {n: make_component(n) for n in names}  # rank 0's initial values (the lowest holder's)
    grads: dict[str, list[list[torch.Tensor]]] = {}
    for rank, held in HELD.items():
        modules = {n: make_component(n) for n in held}
        local_loss(rank, modules).backward()
        for n, m in modules.items():
            if all(p.grad is not None for p in m.parameters()):
                grads.setdefault(n, []).append([p.grad for p in m.parameters()])
    out = {}
    for n, m in start.items():
        with torch.no_grad():
            for i, p in enumerate(m.parameters()):
                if n in grads:
                    p.sub_(0.1 * torch.stack([g[i] for g in grads[n]]).mean(0))
        out[n] = m.state_dict()
    return out


def test_sync_step_matches_single_process_reference(tmp_path):
    run_workers(sync_step_worker, 2, str(tmp_path / "init"), str(tmp_path), timeout_s=60)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    expected = reference_step()
    for rank, res in enumerate(results):
        for name, state in res["state"].items():
            for key, value in state.items():
                torch.testing.assert_close(value, expected[name][key], msg=f"rank {rank} {name}.{key}")
    for name in ("shared", "shared_sometimes", "shared_idle"):  # replicas bit-identical
        for key in results[0]["state"][name]:
            assert torch.equal(results[0]["state"][name][key], results[1]["state"][name][key]), (name, key)
    # unshared components take only their own rank's gradient; rank 1's own.0 never exists
    assert "own.0" not in results[1]["state"] and "own.1" not in results[0]["state"]
    assert results[0]["used"] == {"own.0": 1, "own.1": 1, "shared": 2, "shared_idle": 0, "shared_sometimes": 1}
    # a holder that did not use a component receives the average; a component nobody used keeps None
    assert results[1]["grads_none"]["shared_sometimes"] is False
    assert results[0]["grads_none"]["shared_idle"] and results[1]["grads_none"]["shared_idle"]
    # bytes: the used vector (5 fp32) + the two used shared Linear(3, 3) (12 fp32 each); not the idle one
    assert results[0]["bytes"] == results[1]["bytes"] == 5 * 4 + 2 * 12 * 4


# ---- end to end through Lightning ------------------------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def task(name, src, tgt):
    return {"name": name, "task": "mt", "source_lang": src, "target_lang": tgt,
            "encoder": [f"encoder.0.{src}"], "decoder": [f"decoder.0.{tgt}"]}


@pytest.fixture(scope="module")
def e2e_cfg(tmp_path_factory) -> dict:
    from nemo_emmett.data.prepare.tokenizer import train_sentencepiece
    from tests.conftest import write_text_source

    root = tmp_path_factory.mktemp("e2e")
    lines = [f"s{a} s{b} t{a} t{b}" for a in range(10) for b in range(10)]
    spm = str(train_sentencepiece(lines, vocab_size=40, key={"test": "component_sync"}, out_dir=root,
                                  user_defined_symbols=["<de>", "<en>", "<fr>"]))
    sources = [{"name": f"en{t}", "path": str(write_text_source(root / f"en{t}", f"en{t}", 120, seed=i, tgt=t,
                                                                   max_words=6, shard_size=20)),
                "task": "mt", "source_lang": "en", "target_lang": t} for i, t in enumerate(("de", "fr"))]
    return {
        "model": {
            "tokenizer": {"spm_path": spm},
            "modular": {"d_model": 16, "n_heads": 2, "d_ff": 32, "dropout": 0.0, "encoder_layers": [1],
                        "decoder_layers": [1],
                        # mt_de-en sits on both ranks but has no data: its components are held, never used
                        "tasks": [task("mt_en-de", "en", "de"), task("mt_en-fr", "en", "fr"), task("mt_de-en", "de", "en")],
                        "devices": [["mt_en-de", "mt_de-en"], ["mt_en-fr", "mt_de-en"]]},
            "optim": {"optimizer": {"_target_": "torch.optim.AdamW", "lr": 1e-2}, "lr_scheduler": None},
        },
        "data": {"train_sources": sources, "validation_sources": [], "demo": {"enabled": False},
                 "tokenizer": {"model_path": spm}, "num_workers": 0, "estimation_examples": 100,
                 "text_buckets": {"max_padded_size": 60, "num_input_bins": 2, "num_output_bins": 1}},
    }


def run_fit(cfg, out, max_steps, ckpt=None, kill_at=None, val_every=None):
    run_workers(lightning_worker, 2, free_port(), cfg, str(out), max_steps, ckpt, kill_at, val_every, timeout_s=150)
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


def run_killed(cfg, out, max_steps, kill_at):
    """A 2-process run whose processes are SIGKILLed after step ``kill_at`` (a preempted job)."""
    import torch.multiprocessing as mp

    with pytest.raises(mp.ProcessExitedException, match="signal SIGKILL"):
        run_fit(cfg, out, max_steps, kill_at=kill_at)
    assert not (out / "rank0.pt").exists()  # it never finished


def test_lightning_strategy_trains_replicas_alike_and_resumes(e2e_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("NEMO_EMMETT_CACHE", str(tmp_path / "cache"))
    full = run_fit(e2e_cfg, tmp_path / "full", 6)
    holders = full[0]["holders"]
    assert holders["embed.full"] == holders["encoder.0.en"] == [0, 1]
    assert holders["decoder.0.de"] == [0] and holders["decoder.0.fr"] == [1]
    assert holders["encoder.0.de"] == holders["decoder.0.en"] == [0, 1]
    for r in range(2):  # each model's own records got their holders from the placement
        assert full[r]["model_holders"] == {c: holders[c] for c in full[r]["model_holders"]}
    assert "decoder.0.fr" in full[1]["model_holders"] and "decoder.0.fr" not in full[0]["model_holders"]
    assert full[0]["used"]["encoder.0.de"] == 0  # held by both, used by none: no hang, no communication
    states = [r["state"] for r in full]
    shared = [k for k in states[0] if k in states[1]]
    assert any(k.startswith("backbone.components.embed") for k in shared)
    for k in shared:
        assert torch.equal(states[0][k], states[1][k]), k  # replicas identical after training
    assert not any("decoder.0.fr" in k for k in states[0]) and not any("decoder.0.de" in k for k in states[1])
    assert all(i.startswith("ende-") for ids in full[0]["ids"] for i in ids)  # each rank reads only its sources
    assert all(i.startswith("enfr-") for ids in full[1]["ids"] for i in ids)
    # bytes: the used vector + the two used shared components (embed.full, encoder.0.en), fp32
    ps = {c: sum(v.numel() for k, v in states[0].items() if c.replace(".", "_") in k.replace(".", "_"))
          for c in ("embed.full", "encoder.0.en")}
    assert full[0]["bytes"] == 4 * len(holders) + 4 * sum(ps.values())
    assert full[0]["sync_steps"] == full[1]["sync_steps"] == list(range(6))  # one sync per automatic step

    run_killed(e2e_cfg, tmp_path / "killed", 6, kill_at=4)
    ckpt = next((tmp_path / "killed" / "ckpt").glob("*step=3.ckpt"))  # written before the kill
    saved = torch.load(ckpt, weights_only=False)
    assert len(saved["optimizer_states"][0]["component_sync_ranks"]) == 2
    assert {k for k in saved["state_dict"]} == set(states[0]) | set(states[1])  # every component once
    assert len(saved["hyper_parameters"]["cfg"]["modular"]["tasks"]) == 3  # rebuilds the whole model
    resumed = run_fit(e2e_cfg, tmp_path / "resumed", 6, str(ckpt))
    for r in range(2):
        assert resumed[r]["ids"] == full[r]["ids"][3:]
        for k, v in full[r]["state"].items():
            torch.testing.assert_close(resumed[r]["state"][k], v, msg=f"rank {r} {k}")


def test_mgcm_manual_optimization_under_component_sync(e2e_cfg, tmp_path, monkeypatch):
    """MGCM steps the optimizer itself: no DDP all-reduce over differing parameters, the strategy's
    sync once per task (one task here) through its gradient sync and never again in opt.step(),
    global-norm clipping; replicas stay identical."""
    monkeypatch.setenv("NEMO_EMMETT_CACHE", str(tmp_path / "cache"))
    cfg = {**e2e_cfg, "model": {**e2e_cfg["model"], "mgcm": {"enabled": True, "primary_task": "mt",
                                                              "granularity": "component", "gradient_clip_val": 0.5}}}
    out = run_fit(cfg, tmp_path / "mgcm", 2)
    states = [r["state"] for r in out]
    shared = [k for k in states[0] if k in states[1]]
    assert shared and all(torch.equal(states[0][k], states[1][k]) for k in shared)
    assert out[0]["used"]["embed.full"] == 2
    assert out[0]["sync_steps"] == out[1]["sync_steps"] == [0, 1]


def test_validation_under_component_sync_gathers_every_rank_tasks(e2e_cfg, tmp_path, monkeypatch):
    """Each rank validates its own directions (different per-task keys): no collective mismatch or hang,
    and every rank ends with the same losses and the scores of every direction."""
    from tests.conftest import write_text_source

    monkeypatch.setenv("NEMO_EMMETT_CACHE", str(tmp_path / "cache"))
    val = [{"name": f"val_en{t}", "path": str(write_text_source(tmp_path / f"val{t}", f"val{t}", 12, seed=9 + i, tgt=t,
                                                                 max_words=5, shard_size=6)),
            "task": "mt", "source_lang": "en", "target_lang": t} for i, t in enumerate(("de", "fr"))]
    cfg = {**e2e_cfg, "data": {**e2e_cfg["data"], "validation_sources": val, "val_batch_size": 4},
           "model": {**e2e_cfg["model"], "decoding": {"max_new_tokens": 4}}}
    out = run_fit(cfg, tmp_path / "val", 2, val_every=2)
    m0, m1 = out[0]["metrics"], out[1]["metrics"]
    for key in ("val_loss", "val_loss/mt", "bleu/mt:en-de", "bleu/mt:en-fr", "chrf/mt:en-de", "chrf/mt:en-fr"):
        assert key in m0 and key in m1, key
        assert m0[key] == m1[key], key
