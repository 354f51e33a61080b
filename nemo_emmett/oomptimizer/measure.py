"""The run-level entry point shared by the callback and ``emmett-oomptimize``: batch sizes for a
model, its buckets and its run settings (precision, clipping, world size), cached or measured."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import lightning.pytorch as pl
import torch
from tqdm.auto import tqdm

from nemo_emmett.data.batch import TranslationBatch
from nemo_emmett.data.config import DataConfig
from nemo_emmett.oomptimizer.cache import cache_key, cache_path, load_cached, save_json
from nemo_emmett.oomptimizer.config import OOMptimizerConfig, resolve_budget
from nemo_emmett.oomptimizer.fused import optimize_fused_buckets
from nemo_emmett.oomptimizer.probe import StepProbe
from nemo_emmett.oomptimizer.result import CACHE_FORMAT, OOMptimizerResult
from nemo_emmett.oomptimizer.search import optimize_buckets
from nemo_emmett.oomptimizer.worst_case import worst_case_batch

log = logging.getLogger(__name__)


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
    fusion: str = DataConfig.fusion
    """``data.fusion``: ``zip`` sizes fused steps (an audio and a text batch together, ``oomptimizer/fused.py``)."""


def cache_fields(model: Any, bins: dict[str, list[tuple[float, float]]], setting: ProbeSetting,
                 cfg: OOMptimizerConfig, *, budget: int, margin: int) -> dict[str, Any]:
    """Everything the measured batch sizes depend on, for the cache key: the model (class, config, and
    what its config does not show: the tokenizer's vocabulary size, which sizes the embeddings and
    the worst-case batch's token ids, and the parameters' count, dtypes and which are trainable, e.g.
    weights loaded from a pretrained folder or frozen by regex), the bins, the run settings (device,
    precision, world size, clipping, prompt length), the budget and the search settings."""
    params: dict[str, list[int]] = {}
    for p in model.parameters():
        total = params.setdefault(f"{p.dtype}:{'trainable' if p.requires_grad else 'frozen'}", [0])
        total[0] += p.numel()
    device = setting.device
    return {
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "model_cfg": dict(model.hparams).get("cfg"), "vocab_size": model.text.vocab_size,
        "parameters": dict(sorted(params.items())), "bins": bins, "setting": asdict(setting),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "budget": budget, "margin": margin, "headroom": cfg.headroom, "tolerance": cfg.tolerance,
        "max_batch_size": cfg.max_batch_size,
        **({"fused_text_share": cfg.fused_text_share} if setting.fusion == "zip" else {}),
        "torch": torch.__version__, "format": CACHE_FORMAT,
    }


def plan_batch_sizes(model: Any, bins: dict[str, list[tuple[float, float]]], setting: ProbeSetting,
                     cfg: OOMptimizerConfig, *, forward_context=None, use_grad_scaler: bool = False,
                     progress: bool = True) -> OOMptimizerResult:
    """Batch sizes per bucket for ``model`` (a TranslationModel on ``setting.device``): cached, else measured."""
    device = setting.device
    budget = resolve_budget(cfg, device)
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    margin = int(cfg.ddp_grad_buffers * trainable) if setting.world_size > 1 else 0
    key = cache_key(cache_fields(model, bins, setting, cfg, budget=budget, margin=margin))
    path = cache_path(cfg, key)
    cached = load_cached(path, key) if cfg.cache else None
    if cached is not None:
        log.info("OOMptimizer: using cached batch sizes %s\n%s", path, cached.table())
        return cached
    if device.type == "cuda" and cfg.memory_budget is None:
        torch.cuda.set_per_process_memory_fraction(cfg.memory_fraction, device)
    text = model.text

    def make_batch(modality: str, batch_size: int, max_input: float, max_output: float) -> TranslationBatch:
        return worst_case_batch(modality, batch_size, max_input, max_output, text=text,
                                vocab_size=text.vocab_size, prompt_len=setting.prompt_len,
                                token_equivalent_duration=setting.token_equivalent_duration,
                                sampling_rate=setting.sampling_rate, direction=model.probe_direction(modality))

    margin += int(cfg.headroom * budget)
    probe = StepProbe(model, make_batch=make_batch, device=device, budget=budget, margin=margin,
                      forward_context=forward_context, use_grad_scaler=use_grad_scaler,
                      gradient_clip_val=setting.gradient_clip_val)
    if setting.fusion == "zip":
        bar = tqdm(total=sum(len(b) for b in bins.values()), desc="OOMptimizer (fused)", unit="bucket",
                   disable=not progress)
        try:
            result = optimize_fused_buckets(probe, bins, text_share=cfg.fused_text_share, tolerance=cfg.tolerance,
                                            max_batch_size=cfg.max_batch_size, bar=bar)
        finally:
            bar.close()
    else:
        result = optimize_buckets(probe, bins, tolerance=cfg.tolerance, max_batch_size=cfg.max_batch_size,
                                  progress=progress)
    result.key = key
    log.info("OOMptimizer: %d probes\n%s", probe.num_probes, result.table())
    if cfg.cache:
        save_json(path, result.to_json())
    return result


def prompt_length(text: Any, directions: list[tuple[str, str, str]]) -> int:
    """Longest prompt in ids over the (task, source_lang, target_lang) directions of the data, from the
    run's tokenizer as collation builds it (a speech task's source-language code included, with a
    language-code tokenizer: ``parts/text_processor.py``)."""
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
        fusion=dcfg.fusion,
    )
    bins = {m: [tuple(b) for b in mb.grid.bins] for m, mb in plan.buckets.items()}
    plugin = trainer.precision_plugin
    return plan_batch_sizes(model, bins, setting, cfg, forward_context=plugin.forward_context,
                            use_grad_scaler=getattr(plugin, "scaler", None) is not None,
                            progress=trainer.is_global_zero)


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
