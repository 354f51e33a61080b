"""OOMptimizer: the largest batch size of every 2D bucket that fits a memory budget, measured on
the real model before ``fit``, handed to the sampler, and cached on disk.

For each modality, buckets are searched from the largest (longest padded example) to the
smallest; each search starts from the previous bucket's answer, grows exponentially, then
bisects to ``tolerance`` (:func:`nemo_emmett.oomptimizer.search.find_max_batch`). Each probe is
a full training step on a synthetic worst-case batch of the bucket
(:class:`nemo_emmett.oomptimizer.probe.StepProbe`).

Budget: on GPU ``memory_fraction`` of the device's memory (also set as the process's cap), or
``memory_budget`` when given; on CPU ``memory_budget`` (bytes, or "512MiB", "2GiB"), else
``memory_fraction`` of the machine's RAM. With more than one device, ``ddp_grad_buffers``
gradient-sized buffers (DDP's reduction buckets) are added to every measured peak.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from tqdm.auto import tqdm

from nemo_emmett.data.config import DataConfig
from nemo_emmett.data.sampler import ModalityBuckets
from nemo_emmett.oomptimizer.memory import PeakMeter, resident_bytes
from nemo_emmett.oomptimizer.probe import ProbeResult, StepProbe
from nemo_emmett.oomptimizer.search import NothingFits, find_max_batch

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # bump when what a probe measures changes
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30,
          "tib": 2**40}


@dataclass
class OOMptimizerConfig:
    enabled: bool = False
    memory_budget: Any = None
    """Bytes (int) or a size string ("512MiB", "2GiB"); null: memory_fraction of the device (GPU) or RAM."""
    memory_fraction: float = 0.9
    tolerance: float = 0.05
    """Bisection stops when the bracket is at most max(1, tolerance x batch size) wide."""
    headroom: float = 0.05
    """Share of the budget a probe must leave free: a real step holds a little more than the probe's
    (Lightning's logging and loop bookkeeping; measured +1.5% over the probe on the demo config)."""
    max_batch_size: int = 4096
    ddp_grad_buffers: float = 1.0
    """Gradient-sized buffers added to every peak when world size > 1 (DDP's reduction buckets)."""
    cache: bool = True
    cache_dir: str | None = None
    """null: ${NEMO_EMMETT_CACHE:-~/.cache/nemo_emmett}/oomptimizer."""
    output: str | None = None
    """Also write the result as a bucket file (the data config's ``bucket_file``)."""
    measure_steps: int = 0
    """Measure the peak memory of this many real training steps (-1: all) and log ``memory/peak_share``."""


class BucketDoesNotFit(ValueError):
    """A bucket whose worst-case batch of one example exceeds the budget."""


def parse_bytes(value: Any) -> int:
    """512, "512MiB", "2GiB", "1.5GB" -> bytes."""
    if isinstance(value, bool):
        raise ValueError(f"memory_budget must be bytes or a size string like '2GiB', got {value!r}")
    if isinstance(value, (int, float)):
        return int(value)
    m = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", str(value))
    if m is None or m.group(2).lower() not in _UNITS:
        raise ValueError(f"memory_budget {value!r}: expected bytes or a size like '512MiB', '2GiB', '1.5GB'")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def resolve_budget(cfg: OOMptimizerConfig, device: torch.device) -> int:
    if not 0 < cfg.memory_fraction <= 1:
        raise ValueError(f"oomptimizer.memory_fraction must be in (0, 1], got {cfg.memory_fraction}")
    if not 0 <= cfg.headroom < 1:
        raise ValueError(f"oomptimizer.headroom must be in [0, 1), got {cfg.headroom}")
    if cfg.memory_budget is not None:
        budget = parse_bytes(cfg.memory_budget)
    elif device.type == "cuda":
        budget = int(torch.cuda.get_device_properties(device).total_memory * cfg.memory_fraction)
    else:
        budget = int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * cfg.memory_fraction)
    if budget <= 0:
        raise ValueError(f"oomptimizer memory budget must be > 0 bytes, got {budget}")
    return budget


@dataclass
class BucketResult:
    bucket: int
    max_input: float
    max_output: float
    batch_size: int
    peak: int
    probes: int
    capped: bool = False


@dataclass
class OOMptimizerResult:
    budget: int
    buckets: dict[str, list[BucketResult]] = field(default_factory=dict)
    key: str = ""

    def batch_sizes(self, modality: str) -> list[int]:
        return [r.batch_size for r in sorted(self.buckets[modality], key=lambda r: r.bucket)]

    def bucket_file(self) -> dict[str, Any]:
        """The data config's bucket-file layout (plus measured peaks, which readers ignore)."""
        out = {}
        for modality, rows in self.buckets.items():
            rows = sorted(rows, key=lambda r: r.bucket)
            out[modality] = {"bins": [[r.max_input, r.max_output] for r in rows],
                             "batch_sizes": [r.batch_size for r in rows],
                             "peak_bytes": [r.peak for r in rows], "budget_bytes": self.budget}
        return out

    def table(self) -> str:
        lines = [f"OOMptimizer: memory budget {fmt_bytes(self.budget)}",
                 f"  {'modality':<8} {'bucket':>6} {'max_in':>8} {'max_out':>8} {'batch':>6} {'peak':>11} "
                 f"{'budget%':>8} {'probes':>6}"]
        for modality, rows in self.buckets.items():
            for r in sorted(rows, key=lambda r: r.bucket):
                cap = " (max_batch_size)" if r.capped else ""
                lines.append(f"  {modality:<8} {r.bucket:>6} {r.max_input:>8.1f} {r.max_output:>8.1f} "
                             f"{r.batch_size:>6} {fmt_bytes(r.peak):>11} {100 * r.peak / self.budget:>7.1f}% "
                             f"{r.probes:>6}{cap}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"format": CACHE_FORMAT, "key": self.key, "budget": self.budget,
                "buckets": {m: [asdict(r) for r in rows] for m, rows in self.buckets.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OOMptimizerResult:
        return cls(budget=data["budget"], key=data["key"],
                   buckets={m: [BucketResult(**r) for r in rows] for m, rows in data["buckets"].items()})


def search_order(bins: list[tuple[float, float]]) -> list[int]:
    """Bucket indices from the largest padded example (input + output) to the smallest."""
    return sorted(range(len(bins)), key=lambda i: (bins[i][0] + bins[i][1], bins[i]), reverse=True)


def optimize_buckets(probe: StepProbe, bins: dict[str, list[tuple[float, float]]], *, tolerance: float,
                     max_batch_size: int, progress: bool = True) -> OOMptimizerResult:
    """Search every bucket of every modality with ``probe`` (see the module docstring)."""
    result = OOMptimizerResult(budget=probe.budget)
    bar = tqdm(total=sum(len(b) for b in bins.values()), desc="OOMptimizer", unit="bucket", disable=not progress)
    try:
        with probe.preserving_model():
            for modality, mbins in bins.items():
                rows, start = [], 1
                for b in search_order(mbins):
                    row = search_bucket(probe, modality, b, mbins[b], start=start, tolerance=tolerance,
                                        max_batch_size=max_batch_size, bar=bar)
                    rows.append(row)
                    start = row.batch_size
                    bar.update(1)
                result.buckets[modality] = rows
    finally:
        bar.close()
    return result


def search_bucket(probe: StepProbe, modality: str, bucket: int, edges: tuple[float, float], *, start: int,
                  tolerance: float, max_batch_size: int, bar: Any) -> BucketResult:
    max_in, max_out = edges
    seen: dict[int, ProbeResult] = {}

    def fits(n: int) -> bool:
        seen[n] = r = probe(modality, max_in, max_out, n)
        bar.set_postfix_str(f"{modality} bucket {bucket}: batch {n} {'fits' if r.fits else 'over'} "
                            f"({fmt_bytes(r.peak)})", refresh=False)
        return r.fits

    try:
        found = find_max_batch(fits, start=start, tolerance=tolerance, max_batch=max_batch_size)
    except NothingFits:
        margin = f", plus {fmt_bytes(probe.margin)} of headroom and DDP margin" if probe.margin else ""
        raise BucketDoesNotFit(
            f"OOMptimizer: {modality} bucket {bucket} (max input {max_in:g}, max output {max_out:g}) does not fit "
            f"the memory budget of {fmt_bytes(probe.budget)} even with batch size 1 (measured peak "
            f"{fmt_bytes(seen[1].peak)}{margin}). Raise oomptimizer.memory_budget, cap the bucket's lengths "
            f"(data.{modality}_buckets.max_input / max_output), or use a smaller model."
        ) from None
    return BucketResult(bucket, max_in, max_out, found.batch_size, seen[found.batch_size].peak, len(found.probes),
                        found.capped)


# ---- cache -------------------------------------------------------------------------------------
def cache_key(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cache_path(cfg: OOMptimizerConfig, key: str) -> Path:
    from nemo_emmett.data.prepare.tokenizer import cache_dir

    root = Path(cfg.cache_dir) if cfg.cache_dir else cache_dir() / "oomptimizer"
    return root / f"{key}.json"


def load_cached(path: Path, key: str) -> OOMptimizerResult | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if data.get("format") != CACHE_FORMAT or data.get("key") != key:
            return None
        return OOMptimizerResult.from_json(data)
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        log.warning("OOMptimizer: ignoring unreadable cache file %s (%s)", path, e)
        return None


def save_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


# ---- the run-level entry point shared by the callback and the CLI -------------------------------
@dataclass
class ProbeSetting:
    """Everything about the run that the measured memory depends on, besides the model and bins."""

    device: torch.device
    precision: str
    world_size: int = 1
    gradient_clip_val: float | None = None
    token_equivalent_duration: float = DataConfig.token_equivalent_duration
    sampling_rate: int = DataConfig.sampling_rate
    prompt_len: int = 1


def plan_batch_sizes(model: Any, bins: dict[str, list[tuple[float, float]]], setting: ProbeSetting,
                     cfg: OOMptimizerConfig, *, forward_context=None, use_grad_scaler: bool = False,
                     progress: bool = True) -> OOMptimizerResult:
    """Batch sizes per bucket for ``model`` (a TranslationModel on ``setting.device``): cached, else measured."""
    from nemo_emmett.data.dataset import worst_case_batch

    device = setting.device
    budget = resolve_budget(cfg, device)
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    margin = int(cfg.ddp_grad_buffers * trainable) if setting.world_size > 1 else 0
    fields = {
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "model_cfg": dict(model.hparams).get("cfg"), "bins": bins, "setting": asdict(setting),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "budget": budget, "margin": margin, "headroom": cfg.headroom, "tolerance": cfg.tolerance,
        "max_batch_size": cfg.max_batch_size,
        "torch": torch.__version__, "format": CACHE_FORMAT,
    }
    key = cache_key(fields)
    path = cache_path(cfg, key)
    cached = load_cached(path, key) if cfg.cache else None
    if cached is not None:
        log.info("OOMptimizer: using cached batch sizes %s\n%s", path, cached.table())
        return cached
    if device.type == "cuda" and cfg.memory_budget is None:
        torch.cuda.set_per_process_memory_fraction(cfg.memory_fraction, device)
    text = model.text

    def make_batch(modality: str, batch_size: int, max_input: float, max_output: float) -> dict[str, Any]:
        return worst_case_batch(modality, batch_size, max_input, max_output, text=text,
                                vocab_size=text.vocab_size, prompt_len=setting.prompt_len,
                                token_equivalent_duration=setting.token_equivalent_duration,
                                sampling_rate=setting.sampling_rate, direction=model.probe_direction(modality))

    margin += int(cfg.headroom * budget)
    probe = StepProbe(model, make_batch=make_batch, device=device, budget=budget, margin=margin,
                      forward_context=forward_context, use_grad_scaler=use_grad_scaler,
                      gradient_clip_val=setting.gradient_clip_val)
    result = optimize_buckets(probe, bins, tolerance=cfg.tolerance, max_batch_size=cfg.max_batch_size,
                              progress=progress)
    result.key = key
    log.info("OOMptimizer: %d probes\n%s", probe.num_probes, result.table())
    if cfg.cache:
        save_json(path, result.to_json())
    return result


def prompt_length(text: Any, directions: list[tuple[str, str, str]]) -> int:
    """Longest prompt in tokens over the (task, source_lang, target_lang) directions of the data."""
    return max((len(text.prompt_ids(task=t, source_lang=s, target_lang=g)) for t, s, g in directions), default=1)


def measure_for_trainer(trainer: pl.Trainer, datamodule: Any, model: Any, cfg: OOMptimizerConfig) -> OOMptimizerResult:
    """Batch sizes for ``model`` (on the trainer's device) and the buckets of ``datamodule.plan``, under
    the trainer's precision, gradient clipping and world size."""
    plan, dcfg = datamodule.plan, datamodule.cfg
    setting = ProbeSetting(
        device=model.device, precision=str(trainer.precision), world_size=trainer.world_size,
        gradient_clip_val=trainer.gradient_clip_val, token_equivalent_duration=dcfg.token_equivalent_duration,
        sampling_rate=dcfg.sampling_rate,
        prompt_len=prompt_length(model.text, [(s.task, s.source_lang, s.target_lang) for s in plan.train]),
    )
    bins = {m: [tuple(b) for b in mb.grid.bins] for m, mb in plan.buckets.items()}
    plugin = trainer.precision_plugin
    return plan_batch_sizes(model, bins, setting, cfg, forward_context=plugin.forward_context,
                            use_grad_scaler=getattr(plugin, "scaler", None) is not None,
                            progress=trainer.is_global_zero)


class OOMptimizer(pl.Callback):
    """Before the first training batch, sizes every bucket's batch for the real model and run
    settings, and replaces the batch sizes of ``trainer.datamodule.plan`` (the sampler reads them
    when the training loader is built, which happens after ``on_fit_start``)."""

    def __init__(self, cfg: OOMptimizerConfig | dict | None = None):
        from omegaconf import OmegaConf

        if cfg is None or isinstance(cfg, OOMptimizerConfig):
            self.cfg = cfg or OOMptimizerConfig()
        else:
            merged = OmegaConf.merge(OmegaConf.structured(OOMptimizerConfig), OmegaConf.create(dict(cfg)))
            self.cfg = OmegaConf.to_object(merged)
        self.result: OOMptimizerResult | None = None
        self.measured: dict[tuple[str, int], int] = {}
        """Highest measured peak of real training steps per (modality, bucket) (``measure_steps``)."""
        self._steps_measured = 0
        self._meter: PeakMeter | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        plan = getattr(trainer.datamodule, "plan", None)
        if plan is None:
            raise RuntimeError("OOMptimizer needs an EmmettDataModule set up before fit (its plan holds the buckets)")
        result = agree_across_ranks(trainer, measure_for_trainer(trainer, trainer.datamodule, pl_module, self.cfg))
        for modality, mb in plan.buckets.items():
            plan.buckets[modality] = ModalityBuckets(mb.grid, result.batch_sizes(modality))
        if self.cfg.output and trainer.is_global_zero:
            save_json(Path(self.cfg.output), result.bucket_file())
        self.result = result

    # ---- measuring real steps against the budget ---------------------------------------------
    def _measuring(self) -> bool:
        n = self.cfg.measure_steps
        return self.result is not None and (n < 0 or self._steps_measured < n)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if not self._measuring():
            return
        if self._meter is None or self._meter.device != pl_module.device:
            self._meter = PeakMeter(pl_module.device)
        self._meter.start(resident_bytes(pl_module, *trainer.optimizers))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self._measuring():
            return
        peak = self._meter.stop().peak
        self._steps_measured += 1
        key = (batch["modality"], int(batch["bucket"]))
        self.measured[key] = max(self.measured.get(key, 0), peak)
        share = peak / self.result.budget
        pl_module.log("memory/peak_share", share, on_step=True, on_epoch=False, batch_size=len(batch["ids"]))
        if share > 1.0:
            log.warning("step %d (%s bucket %d, batch %d) peaked at %s, over the OOMptimizer budget of %s",
                        trainer.global_step, *key, len(batch["ids"]), fmt_bytes(peak), fmt_bytes(self.result.budget))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.measured:
            log.info("OOMptimizer: measured peak of %d training steps, per bucket:\n%s", self._steps_measured,
                     "\n".join(f"  {m:<6} bucket {b:>3}: {fmt_bytes(v):>11} ({100 * v / self.result.budget:5.1f}% "
                               "of budget)" for (m, b), v in sorted(self.measured.items())))


def agree_across_ranks(trainer: pl.Trainer, result: OOMptimizerResult) -> OOMptimizerResult:
    """Every rank measured on its own device; all take the smallest answer per bucket."""
    if trainer.world_size <= 1:
        return result
    for rows in result.buckets.values():
        sizes = torch.tensor([r.batch_size for r in rows], device=trainer.strategy.root_device)
        torch.distributed.all_reduce(sizes, op=torch.distributed.ReduceOp.MIN)
        for r, s in zip(rows, sizes.tolist()):
            r.batch_size = int(s)
    return result
