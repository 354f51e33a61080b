#!/usr/bin/env python
"""One-GPU check of the GPU code paths: a ~100M-parameter SALM-T5 in bf16-mixed, the OOMptimizer with
real out-of-memory errors, then training steps measured against its budget. Prints ONE JSON object.

    python benchmarks/gpu_check.py                 # CUDA: ~100M T5 backbone, 200 steps (fits in 8 minutes)
    python benchmarks/gpu_check.py --smoke         # CPU: the same code path, a tiny model, 5 steps (< 1 min)

What it does, in order:

1. A SentencePiece tokenizer trained on synthetic words (8,000 pieces; nothing is downloaded) and a
   SALM-T5 with a random-init T5 backbone (d_model 768, d_ff 3072, 6 + 6 layers, 12 heads: ~105M
   parameters with the embeddings) and a small FastConformer perception.
2. The OOMptimizer (``oomptimizer.plan_batch_sizes``, the code the callback runs before ``fit``, cache
   off) over two text and two audio buckets, under Lightning's bf16-mixed autocast: on CUDA the process
   is capped at ``memory_fraction`` of the device, so over-large probes end in real
   ``torch.cuda.OutOfMemoryError``s, which the probe catches. ``oom_count`` counts those probes (the
   probe's own "out of memory" outcomes); ``cuda_num_ooms`` is the caching allocator's counter.
3. ``--steps`` training steps through a Lightning ``Trainer`` (``precision=bf16-mixed``, AdamW, norm
   clipping 1.0), cycling over worst-case batches of every bucket at the batch sizes found. Each
   step's peak is measured as the OOMptimizer's callback does (``PeakMeter``); ``peak_over_budget``
   is the highest over the budget (must stay <= 1). Throughput is timed after ``--warmup`` steps.

Model FLOPs (the 6·N·D rule, Kaplan et al. 2020, applied per stack since an encoder-decoder sends
each position through only part of the model)::

    flops per step = 6 * (N_perception * F + N_encoder * S + N_decoder * U)

``F``: speech frames out of the perception, ``S``: encoder positions (speech frames + prompt, or prompt
+ source tokens), ``U``: target tokens; ``N_encoder`` leaves out the token embedding (a lookup),
``N_decoder`` counts the LM head (tied to that embedding in T5) once. Attention's sequence-quadratic
terms and the perception's pre-subsampling convolutions are left out, so MFU is a slight
underestimate. ``tokens_per_s`` = (S + U) per second; ``mfu`` = achieved FLOP/s over the device's
dense bf16 peak (:data:`PEAK_BF16_FLOPS`, matched on the device name; unknown device: null).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PEAK_BF16_FLOPS = [("H100 PCIe", 756e12), ("H200", 989e12), ("H100", 989e12), ("GH200", 989e12),
                   ("A100", 312e12), ("L40S", 362e12)]
"""Dense bf16 tensor-core peaks (no sparsity) by device-name substring, first match wins (NVIDIA data sheets)."""

GPU = {
    "backbone": {"model_type": "t5", "d_model": 768, "d_ff": 3072, "d_kv": 64, "num_heads": 12, "num_layers": 6,
                 "num_decoder_layers": 6, "dropout_rate": 0.1},
    "perception": {"d_model": 256, "n_layers": 2, "n_heads": 4, "subsampling_conv_channels": 128, "adapter_layers": 1},
    "vocab_size": 8000,
    "bins": {"text": [(64.0, 64.0), (256.0, 256.0)], "audio": [(125.0, 64.0), (250.0, 128.0)]},
    "oomptimizer": {"memory_fraction": 0.9},
    "steps": 200, "warmup": 10,
}
SMOKE = {
    "backbone": {"model_type": "t5", "d_model": 32, "d_ff": 64, "d_kv": 8, "num_heads": 4, "num_layers": 1,
                 "num_decoder_layers": 1},
    "perception": {"d_model": 32, "n_layers": 1, "n_heads": 4, "subsampling_conv_channels": 16, "adapter_layers": 1},
    "vocab_size": 200,
    "bins": {"text": [(8.0, 8.0)], "audio": [(12.0, 8.0)]},
    "oomptimizer": {"memory_budget": "8MiB", "max_batch_size": 32},  # audio finds its limit below the cap
    "steps": 5, "warmup": 1,
}


def peak_flops(device_name: str) -> float | None:
    for key, flops in PEAK_BF16_FLOPS:
        if key in device_name:
            return flops
    return None


def synthetic_tokenizer(out_dir: Path, vocab_size: int) -> str:
    """A SentencePiece model over random syllable words (enough distinct text for ``vocab_size`` pieces)."""
    from nemo_emmett.data.prepare.tokenizer import train_sentencepiece

    rng = random.Random(0)
    syllables = [a + b for a in "bcdfghjklmnprstvwz" for b in "aeiou"]
    words = ["".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(max(200, 4 * vocab_size))]
    lines = [" ".join(rng.choices(words, k=rng.randint(4, 20))) for _ in range(max(500, 3 * vocab_size))]
    return str(train_sentencepiece(lines, vocab_size=vocab_size, key={"gpu_check": vocab_size}, out_dir=out_dir,
                                   user_defined_symbols=["<xx>", "<yy>"]))


def build_model(spec: dict[str, Any], spm: str):
    from nemo_emmett.models.salm_t5 import SalmT5

    torch.manual_seed(0)
    return SalmT5({"tokenizer": {"spm_path": spm}, "backbone": {"config": dict(spec["backbone"])},
                   "perception": dict(spec["perception"]),
                   "optim": {"optimizer": {"_target_": "torch.optim.AdamW", "lr": 1e-4}, "lr_scheduler": None}})


def stack_parameters(model) -> dict[str, int]:
    """Parameters per stack as the FLOP formula counts them (module docstring)."""
    bb = model.backbone
    emb = bb.get_input_embeddings().weight
    head = bb.get_output_embeddings().weight
    enc = sum(p.numel() for p in bb.encoder.parameters() if p is not emb)
    dec = sum(p.numel() for p in bb.decoder.parameters() if p is not emb and p is not head) + head.numel()
    perc = sum(p.numel() for p in model.perception.parameters()) if model.perception is not None else 0
    return {"encoder": enc, "decoder": dec, "perception": perc, "total": sum(p.numel() for p in model.parameters())}


class OOMCounter(logging.Handler):
    """Counts the probes that ended in an out-of-memory error (``oomptimizer/probe.py`` logs each one)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "out of memory" in record.getMessage():
            self.count += 1


def run_oomptimizer(model, spec: dict[str, Any], device: torch.device, precision_plugin) -> tuple[Any, dict]:
    from nemo_emmett.oomptimizer import OOMptimizerConfig, ProbeSetting, plan_batch_sizes

    cfg = OOMptimizerConfig(enabled=True, cache=False, **spec["oomptimizer"])
    setting = ProbeSetting(device=device, precision="bf16-mixed", gradient_clip_val=1.0, prompt_len=1)
    counter = OOMCounter()
    probe_log = logging.getLogger("nemo_emmett.oomptimizer.probe")
    level = probe_log.level
    probe_log.setLevel(logging.DEBUG)
    probe_log.addHandler(counter)
    cuda_ooms = torch.cuda.memory_stats(device).get("num_ooms", 0) if device.type == "cuda" else 0
    t0 = time.perf_counter()
    try:
        result = plan_batch_sizes(model, spec["bins"], setting, cfg, forward_context=precision_plugin.forward_context,
                                  use_grad_scaler=False, progress=False)
    finally:
        probe_log.removeHandler(counter)
        probe_log.setLevel(level)
    info = {"seconds": round(time.perf_counter() - t0, 2), "oom_count": counter.count,
            "cuda_num_ooms": (torch.cuda.memory_stats(device).get("num_ooms", 0) - cuda_ooms
                              if device.type == "cuda" else None),
            "probes": sum(r.probes for rows in result.buckets.values() for r in rows),
            "buckets": {m: [{"max_input": r.max_input, "max_output": r.max_output, "batch_size": r.batch_size,
                             "peak_bytes": r.peak, "capped": r.capped} for r in sorted(rows, key=lambda r: r.bucket)]
                        for m, rows in result.buckets.items()}}
    return result, info


class Throughput:
    """Counts positions per stack through forward hooks (the FLOP formula's F, S, U) while enabled."""

    def __init__(self, model):
        self.enabled = False
        self.frames = self.encoder = self.decoder = 0
        model.backbone.encoder.register_forward_pre_hook(self._encoder, with_kwargs=True)
        model.backbone.decoder.register_forward_pre_hook(self._decoder, with_kwargs=True)
        if model.perception is not None:
            model.perception.register_forward_hook(self._perception)

    def _encoder(self, module, args, kwargs):
        if self.enabled:
            mask = kwargs.get("attention_mask")
            self.encoder += int(mask.sum()) if mask is not None else kwargs["inputs_embeds"].shape[:2].numel()

    def _decoder(self, module, args, kwargs):
        if self.enabled:
            ids = kwargs.get("input_ids")
            self.decoder += ids.numel() if ids is not None else kwargs["inputs_embeds"].shape[:2].numel()

    def _perception(self, module, args, out):
        if self.enabled:
            self.frames += int(out.lengths.sum())


def train_steps(model, result, spec: dict[str, Any], device: torch.device, steps: int, warmup: int,
                max_seconds: float) -> dict[str, Any]:
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    from nemo_emmett.oomptimizer.memory import PeakMeter, resident_bytes
    from nemo_emmett.oomptimizer.worst_case import worst_case_batch

    text = model.text
    batches = [worst_case_batch(m, r.batch_size, r.max_input, r.max_output, text=text, vocab_size=text.vocab_size,
                                prompt_len=1, token_equivalent_duration=0.08, sampling_rate=16000, seed=i)
               for i, (m, r) in enumerate((m, r) for m, rows in result.buckets.items() for r in rows)]
    if device.type == "cuda":  # pinned: the host-to-device copy of a big audio batch overlaps, as with pin_memory
        from lightning_utilities.core.apply_func import apply_to_collection

        batches = [apply_to_collection(b, torch.Tensor, torch.Tensor.pin_memory) for b in batches]
    counts = Throughput(model)

    class Measure(pl.Callback):
        def __init__(self):
            self.peak = 0
            self.t0 = self.t1 = None
            self.steps = 0
            self.loss = None
            self.meter = PeakMeter(device)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                self.t0 = time.perf_counter()
                counts.enabled = True
            self.meter.start(resident_bytes(pl_module, *trainer.optimizers))

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.peak = max(self.peak, self.meter.stop().peak)  # synchronises on CUDA
            self.loss = float(outputs["loss"])
            if counts.enabled:
                self.steps += 1
                self.t1 = time.perf_counter()

    measure = Measure()
    trainer = pl.Trainer(accelerator=device.type if device.type == "cpu" else "gpu", devices=1,
                         precision="bf16-mixed", max_steps=steps, gradient_clip_val=1.0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         use_distributed_sampler=False, limit_val_batches=0, num_sanity_val_steps=0,
                         max_time={"seconds": max_seconds}, callbacks=[measure])
    loader = DataLoader([batches[i % len(batches)] for i in range(steps)], batch_size=None)
    train_oom = None
    try:
        trainer.fit(model, train_dataloaders=loader)
    except torch.cuda.OutOfMemoryError as e:  # the sizes found did not hold in training: report, not crash
        train_oom = str(e)[:500]
    seconds = (measure.t1 - measure.t0) if measure.t0 is not None and measure.t1 is not None else None
    params = stack_parameters(model)
    flops = 6 * (params["perception"] * counts.frames + params["encoder"] * counts.encoder
                 + params["decoder"] * counts.decoder)
    tokens = counts.encoder + counts.decoder
    return {"steps": trainer.global_step, "measured_steps": measure.steps, "measured_seconds": seconds,
            "tokens": tokens, "frames": counts.frames, "encoder_positions": counts.encoder,
            "target_tokens": counts.decoder, "tokens_per_s": tokens / seconds if seconds else None,
            "model_flops": flops, "model_flops_per_s": flops / seconds if seconds else None,
            "peak_bytes": measure.peak, "final_loss": measure.loss, "train_oom": train_oom}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="CPU, a tiny model, a few steps: the same code path")
    p.add_argument("--steps", type=int, default=None, help="training steps (default 200; smoke 5)")
    p.add_argument("--max-train-seconds", type=float, default=240.0, help="stop training after this long")
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    spec = SMOKE if args.smoke else GPU
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA device; run with --smoke for the CPU check", file=sys.stderr)
        return 2
    device = torch.device("cpu") if args.smoke else torch.device("cuda", 0)
    steps = args.steps or spec["steps"]
    warmup = min(spec["warmup"], max(0, steps - 1))
    t_start = time.perf_counter()
    try:
        out = check(args, spec, device, steps, warmup)
    except Exception as e:  # a GPU window is short: say where it failed, as JSON too
        import traceback

        out = {"benchmark": "gpu_check", "smoke": args.smoke, "error": f"{type(e).__name__}: {e}"[:2000],
               "traceback": traceback.format_exc()[-4000:], "torch": torch.__version__, "cuda": torch.version.cuda}
    out["total_seconds"] = round(time.perf_counter() - t_start, 1)
    text = json.dumps(out)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 1 if "error" in out else 0


def check(args: argparse.Namespace, spec: dict[str, Any], device: torch.device, steps: int, warmup: int) -> dict:
    import lightning.pytorch as pl

    with tempfile.TemporaryDirectory() as tmp:
        spm = synthetic_tokenizer(Path(tmp), spec["vocab_size"])
        model = build_model(spec, spm).to(device)
    plugin = pl.Trainer(accelerator="cpu" if args.smoke else "gpu", devices=1, precision="bf16-mixed",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False).precision_plugin  # the autocast Lightning trains under
    result, search = run_oomptimizer(model, spec, device, plugin)
    train = train_steps(model, result, spec, device, steps, warmup, args.max_train_seconds)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = peak_flops(name) if device.type == "cuda" else None
    achieved = train["model_flops_per_s"]
    out = {
        "benchmark": "gpu_check", "smoke": args.smoke, "device_name": name, "torch": torch.__version__,
        "cuda": torch.version.cuda, "precision": "bf16-mixed",
        "parameters": stack_parameters(model),
        "budget_bytes": result.budget, "peak_bytes": train["peak_bytes"],
        "peak_over_budget": train["peak_bytes"] / result.budget,
        "oom_count": search["oom_count"], "cuda_num_ooms": search["cuda_num_ooms"],
        "tokens_per_s": train["tokens_per_s"], "model_flops_per_s": achieved,
        "peak_bf16_flops_per_s": peak, "mfu": achieved / peak if achieved and peak else None,
        "flops_formula": "6 * (N_perception * frames + N_encoder * encoder_positions + N_decoder * target_tokens)",
        "oomptimizer": search, "train": train,
    }
    return out


if __name__ == "__main__":
    sys.exit(main())
