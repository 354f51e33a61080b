"""MGCM inside training: the in-backward projection against per-task autograd gradients, and
Lightning runs (fp32, bf16-mixed, clipping, a non-finite gradient) on a tiny SALM-T5."""

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning.pytorch.strategies import SingleDeviceStrategy

from nemo_emmett.mgcm.config import prepare_trainer_config
from nemo_emmett.mgcm.projection import combine, pair_stats
from nemo_emmett.models.salm_t5 import SalmT5
from nemo_emmett.parts.gradient_sync import local_grad_norm
from tests.models.test_salm_t5 import text_batch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def mgcm_cfg(tiny_cfg):
    return {**tiny_cfg, "mgcm": {"enabled": True, "primary_task": "st", "log_every_n_steps": 1}}


def plain_backward():
    """Stands in for the LightningModule when no Trainer is attached."""
    return SimpleNamespace(manual_backward=lambda loss, **kw: loss.backward(**kw))


TARGETS = {"st": ("zweihundert", "de"), "asr": ("two hundred", "en"), "x": ("cent neuf", "fr")}


def st_asr_batch(model, tasks=("asr", "st", "st", "asr")):
    """An audio batch with one clip per example; each task has its own target text and language."""
    from lhotse import Recording
    from lhotse.audio import AudioSource

    from nemo_emmett.data.dataset import collate
    from nemo_emmett.data.examples import make_audio_example
    from nemo_emmett.data.sampler import Batch
    from tests.models.test_salm_t5 import _wav_bytes

    rng = np.random.default_rng(0)
    exs = []
    for i, task in enumerate(tasks):
        samples = (0.1 * rng.standard_normal(8000 * (i + 2))).astype("float32")
        rec = Recording(id=f"r{i}", sources=[AudioSource(type="memory", channels=[0], source=_wav_bytes(samples))],
                        sampling_rate=16000, num_samples=len(samples), duration=len(samples) / 16000)
        text, lang = TARGETS[task]
        exs.append(make_audio_example(recording=rec, transcript="two hundred", source_lang="en", target_text=text,
                                      target_lang=lang, task="asr" if task == "asr" else "st", dataset="d"))
    n = len(exs)
    batch = collate(Batch("audio", 0, 10, 10, exs, [(1, 1)] * n), sampling_rate=16000, text=model.text)
    batch.tasks = list(tasks)  # "x": a third task, for the several-auxiliary-tasks path
    return batch


def per_task_grads(model, shares, params):
    """Each task's gradient from its own autograd pass over the shared graph."""
    out = {}
    for task, share in shares.items():
        grads = torch.autograd.grad(share, params, retain_graph=True, allow_unused=True)
        out[task] = dict(zip(params, grads))
    return out


def by_module(grads, groups):
    return {m: [grads[p] for p in members] for m, members in groups.items()}


def run_hooked_backward(model, batch):
    """One forward; per-task autograd gradients and the MGCM backward from the same graph."""
    step = model.mgcm
    named = dict(model.named_parameters())
    groups = {m: [named[n] for n in members] for m, members in step.groups.items()}
    params = [p for members in groups.values() for p in members]
    loss = model.batch_loss(batch)
    shares = loss.task_shares()
    total = loss.total()
    grads = per_task_grads(model, shares, params)
    model.zero_grad(set_to_none=True)
    stats = step.backward(plain_backward(), shares, total, list(groups.values()))
    return groups, grads, stats


def close(a, b):
    return torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def test_task_shares_sum_to_the_training_loss(tiny_cfg):
    model = SalmT5(tiny_cfg).eval()
    for batch in (st_asr_batch(model), text_batch(model)):
        loss = model.batch_loss(batch)
        shares = loss.task_shares()
        assert set(shares) == set(batch.tasks)
        assert torch.allclose(sum(shares.values()), loss.total(), rtol=1e-6)
        assert torch.allclose(loss.total(), model.task_losses(batch)[0])


def test_hook_changes_only_conflicting_modules(mgcm_cfg):
    model = SalmT5(mgcm_cfg).eval()  # no dropout: the reference and the hooked pass see one graph anyway
    batch = st_asr_batch(model)
    groups, grads, stats = run_hooked_backward(model, batch)
    reference = combine(by_module(grads["st"], groups), {"asr": by_module(grads["asr"], groups)})
    conflicting, changed = set(), set()
    for m, members in groups.items():
        s = pair_stats([grads["st"][p] for p in members], [grads["asr"][p] for p in members])
        if float(s.dot) < 0 and float(s.primary_sq) > 0:
            conflicting.add(m)
        for p, expected in zip(members, reference[m]):
            if expected is None:
                assert p.grad is None or not p.grad.any(), m
                continue
            assert close(p.grad, expected), m
            plain = sum(g for g in (grads["st"][p], grads["asr"][p]) if g is not None)
            if not close(p.grad, plain):
                changed.add(m)
    assert conflicting and len(conflicting) < len(groups)  # random init: some of each
    assert changed == conflicting
    # statistics of the pass agree with the reference
    dot, pp, aa = stats["asr"].unbind(1)
    assert {m for m, d, p in zip(groups, dot, pp) if d < 0 and p > 0} == conflicting


def test_several_auxiliary_tasks_use_one_reference_copy(mgcm_cfg):
    model = SalmT5(mgcm_cfg).eval()
    batch = st_asr_batch(model, tasks=("st", "asr", "x", "st", "asr", "x"))
    groups, grads, stats = run_hooked_backward(model, batch)
    assert set(stats) == {"asr", "x"}
    reference = combine(by_module(grads["st"], groups),
                        {t: by_module(grads[t], groups) for t in ("asr", "x")})
    n_changed = 0
    for m, members in groups.items():
        for p, expected in zip(members, reference[m]):
            if expected is not None:
                assert close(p.grad, expected), m
                n_changed += not close(p.grad, sum(g for g in (grads[t][p] for t in grads) if g is not None))
    assert n_changed > 0


def test_a_step_without_the_primary_task_is_plain(mgcm_cfg):
    model = SalmT5(mgcm_cfg).eval()
    batch = text_batch(model)
    loss = model.batch_loss(batch)
    expected = torch.autograd.grad(loss.total(), [p for p in model.parameters()], retain_graph=True,
                                   allow_unused=True)
    named = dict(model.named_parameters())
    groups = [[named[n] for n in members] for members in model.mgcm.groups.values()]
    assert model.mgcm.backward(plain_backward(), loss.task_shares(), loss.total(), groups) == {}
    for p, g in zip(model.parameters(), expected):
        assert (p.grad is None) == (g is None) and (g is None or torch.equal(p.grad, g))


# ---- Lightning ------------------------------------------------------------------------------
class Batches(torch.utils.data.IterableDataset):
    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        while True:
            yield from self.batches


def fit(model, batches, steps, **trainer_kw):
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         log_every_n_steps=1, **trainer_kw)
    loader = torch.utils.data.DataLoader(Batches(batches), batch_size=None)
    trainer.fit(model, train_dataloaders=loader)
    return trainer


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("precision", ["32", "bf16-mixed"])
def test_lightning_fit_logs_conflict_statistics(mgcm_cfg, precision):
    model = SalmT5(mgcm_cfg)
    assert model.automatic_optimization is False
    batches = [st_asr_batch(model), text_batch(model)]
    before = snapshot(model)
    trainer = fit(model, batches, steps=2, precision=precision)
    assert trainer.global_step == 2 and model.mgcm.skipped_steps == 0
    after = snapshot(model)
    assert any(not torch.equal(before[n], after[n]) for n in before if n.startswith("perception."))
    metrics = trainer.callback_metrics
    for key in ("conflict_share", "mean_cos", "norm_removed", "conflict_share/encoder", "mean_cos/perception"):
        assert f"mgcm/st-asr/{key}" in metrics, sorted(metrics)
    assert 0.0 <= float(metrics["mgcm/st-asr/conflict_share"]) <= 1.0
    assert -1.0 <= float(metrics["mgcm/st-asr/mean_cos"]) <= 1.0
    assert "train_loss" in metrics and "train_loss/mt" in metrics


class PlainSGD(torch.optim.SGD):
    """SGD that ignores the AdamW arguments of the default ``model.optim`` (user dicts merge into it)."""

    def __init__(self, params, lr, **_):
        super().__init__(params, lr=lr)


def test_gradient_clipping_bounds_the_update(mgcm_cfg):
    mgcm_cfg["optim"] = {"optimizer": {"_target_": f"{__name__}.PlainSGD", "lr": 1.0}, "lr_scheduler": None}
    mgcm_cfg["mgcm"]["gradient_clip_val"] = 1e-3
    model = SalmT5(mgcm_cfg).eval()
    before = snapshot(model)
    fit(model, [st_asr_batch(model)], steps=1)
    after = snapshot(model)
    update = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(after[n] - before[n]) for n in before]))
    assert 0 < float(update) <= 1e-3 * (1 + 1e-3)  # SGD, lr 1: the update is the clipped gradient


def test_non_finite_gradient_skips_the_step(mgcm_cfg):
    model = SalmT5(mgcm_cfg)
    p = model.backbone.get_input_embeddings().weight
    p.register_hook(lambda g: g * float("inf"))
    before = snapshot(model)
    trainer = fit(model, [st_asr_batch(model)], steps=2)
    assert trainer.global_step == 2 and model.mgcm.skipped_steps == 2
    after = snapshot(model)
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert not trainer.optimizers[0].state  # AdamW took no step at all
    assert float(trainer.callback_metrics["mgcm/skipped_steps"]) == 2.0


class RecordingSync:
    """A gradient sync (``parts/gradient_sync.py``'s protocol) that records what the step asks of it."""

    def __init__(self, sync_each_task=False):
        self.sync_each_task = sync_each_task
        self.calls = []
        self.synced = []  # per sync: (number of parameters, how many hold a gradient)

    @contextlib.contextmanager
    def no_sync(self):
        self.calls.append("no_sync")
        yield
        self.calls.append("end_no_sync")

    def sync(self, params):
        self.calls.append("sync")
        self.synced.append((len(params), sum(p.grad is not None for p in params)))

    def global_norm(self, params):
        self.calls.append("global_norm")
        return local_grad_norm(params)

    def clip_by_norm(self, params, max_norm):
        self.calls.append(("clip_by_norm", max_norm))
        return torch.nn.utils.clip_grad_norm_(params, max_norm)


class OwnSyncStrategy(SingleDeviceStrategy):
    """A strategy of no class MGCM knows: only its ``gradient_sync()`` matters."""

    def __init__(self, sync):
        super().__init__(device="cpu")
        self.own_sync = sync

    def gradient_sync(self):
        return self.own_sync


def test_the_step_synchronises_through_the_strategy_s_gradient_sync(mgcm_cfg):
    mgcm_cfg["mgcm"]["gradient_clip_val"] = 0.5
    model = SalmT5(mgcm_cfg)
    sync = RecordingSync()
    before = snapshot(model)
    trainer = fit(model, [st_asr_batch(model)], steps=2, strategy=OwnSyncStrategy(sync))
    assert trainer.global_step == 2 and any(not torch.equal(before[n], p) for n, p in snapshot(model).items())
    # backward passes under no_sync, one sync of the combined gradient, then the norm and the clip
    assert sync.calls == ["no_sync", "end_no_sync", "sync", "global_norm", ("clip_by_norm", 0.5)] * 2
    trainable = sum(p.requires_grad for p in model.parameters())
    assert [n for n, _ in sync.synced] == [trainable] * 2 and all(g > 0 for _, g in sync.synced)


def test_a_sync_per_task_needs_a_modular_model(mgcm_cfg):
    model = SalmT5(mgcm_cfg)
    with pytest.raises(TypeError, match="SalmT5: a gradient sync per task .* needs a modular model"):
        fit(model, [st_asr_batch(model)], steps=1, strategy=OwnSyncStrategy(RecordingSync(sync_each_task=True)))


def test_trainer_config_moves_clipping_into_the_model():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"model": {"mgcm": {"enabled": True}},
                            "trainer": {"gradient_clip_val": 1.0, "accumulate_grad_batches": 1}})
    prepare_trainer_config(cfg)
    assert "gradient_clip_val" not in cfg.trainer and cfg.model.mgcm.gradient_clip_val == 1.0
    off = OmegaConf.create({"model": {}, "trainer": {"gradient_clip_val": 1.0}})
    prepare_trainer_config(off)
    assert off.trainer.gradient_clip_val == 1.0
    bad = OmegaConf.create({"model": {"mgcm": {"enabled": True}}, "trainer": {"accumulate_grad_batches": 4}})
    with pytest.raises(ValueError, match="trainer.accumulate_grad_batches=4 with model.mgcm.enabled"):
        prepare_trainer_config(bad)


def test_fp16_grad_scaler_skips_non_finite_steps_and_lowers_its_scale(mgcm_cfg):
    model = SalmT5(mgcm_cfg)
    model.backbone.get_input_embeddings().weight.register_hook(lambda g: g * float("inf"))
    before = snapshot(model)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    # Lightning turns precision="16-mixed" into bf16 on CPU; the plugin keeps fp16 and its scaler
    trainer = fit(model, [st_asr_batch(model)], steps=2, plugins=[MixedPrecision("16-mixed", "cpu", scaler)])
    assert trainer.precision_plugin.scaler is scaler and scaler.get_scale() == 2.0**14  # halved twice
    assert model.mgcm.skipped_steps == 2
    assert all(torch.equal(before[n], p) for n, p in snapshot(model).items())



REPO = Path(__file__).resolve().parents[2]
TINY_DEMO_RUN = [
    "data.demo.num_train=40", "data.demo.num_val=8", "data.demo.num_mt_train=40", "data.tokenizer.vocab_size=200",
    "data.audio_buckets.num_input_bins=2", "data.text_buckets.num_input_bins=2", "data.val_batch_size=64",
    "model.backbone.config.d_model=32", "model.backbone.config.d_ff=64", "model.backbone.config.d_kv=8",
    "model.backbone.config.num_layers=1", "model.backbone.config.num_decoder_layers=1", "model.perception.d_model=32",
    "model.perception.n_layers=1", "model.perception.subsampling_conv_channels=16", "model.decoding.max_new_tokens=8",
]


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed; the demo corpus needs it")
def test_train_script_with_mgcm_on_the_demo_config(tmp_path):
    """examples/train.py as users run it: the demo config (trainer.gradient_clip_val 1.0 moves into
    the model), MGCM on with fused steps (``data.fusion=zip``: ST, ASR and MT in every step), a few
    steps, a validation."""
    # PYTHONPATH: this checkout's package, not whichever one is installed
    env = {**os.environ, "NEMO_EMMETT_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    args = [sys.executable, str(REPO / "examples/train.py"), *TINY_DEMO_RUN, "model.mgcm.enabled=true", "data.fusion=zip",
            "trainer.max_steps=6", "trainer.val_check_interval=6", "trainer.log_every_n_steps=3",
            "data.num_workers=0", f"exp_manager.exp_dir={tmp_path / 'exp'}"]
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "MGCM: primary task 'st'" in out and "`Trainer.fit` stopped: `max_steps=6` reached" in out
    assert "bleu/avg" in out
    events = list((tmp_path / "exp").rglob("events.out.tfevents*"))
    assert events, "no tensorboard log"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for e in events:
        acc = EventAccumulator(str(e))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert "mgcm/skipped_steps" in tags
    assert any(t.startswith("mgcm/st-asr/") for t in tags), sorted(tags)
    assert any(t.startswith("mgcm/st-mt/") for t in tags), sorted(tags)  # MT projected against ST
