#!/usr/bin/env python
"""MGCM vs plain summed multi-task training vs model-level PCGrad, on the tiny SALM-T5 of the demo config.

    python benchmarks/mgcm.py                 # 200 steps per method (about 15 minutes on 2 busy cores)
    python benchmarks/mgcm.py --quick         # 6 steps, 1 validation batch, 1 memory run (the test runs it)

One process, one thread, one seed. The model of ``nemo_emmett/conf/salm_t5.yaml`` (random init, seeded), the
demo corpus (``EmmettDataModule`` with the default data config; built once and cached), the same
training batches in the same order for every method, AdamW + warmup-inverse-sqrt as in the config,
gradient clipping at 1.0. Methods differ only in how the step's gradient is formed:

* ``plain``: ``loss.backward()`` of the summed loss (what training does without MGCM).
* ``pcgrad``: model-level PCGrad as commonly implemented (Yu et al. 2020; the widely copied
  ``PCGrad`` optimizer wrapper): one backward per task share with the graph kept, each task's
  gradient copied out of ``.grad`` and flattened into one vector, every task vector projected off
  every other task vector it conflicts with (random order), the projected vectors summed and
  written back to ``.grad``.
* ``mgcm``: :class:`nemo_emmett.mgcm.step.MGCMStep` (module granularity, primary ``st``).

Steps whose batch holds the primary task and one other (ST + ASR audio batches) differ between
methods; MT text batches and single-task batches take the plain backward in all three.

Memory (``nemo_emmett.oomptimizer.memory.measure_peak``; on CPU the allocator's events under
``torch.profiler``): from the initial weights, after the forward pass (dropout off, so every
method sees the same graph), the peak bytes allocated above what was alive while the method's
backward passes and gradient combination run (``.grad`` empty before); median of 3 runs after a
warm-up. Measured on two inputs: ``batch``, the first training batch holding ST and ASR, and
``pair``, one ST and one ASR example of it (activation memory small next to the gradients, as
in large models). Reported per method as differences:

* ``extra_over_plain_bytes``: minus ``plain``'s peak: all the method adds to a training step's
  peak, the forward graph kept for a second backward pass included;
* ``extra_over_two_pass_bytes``: minus the peak of ``two_pass``, two backward passes (ASR share
  with the graph kept, then ST share) accumulating into ``.grad`` without projection, which any
  per-task method pays: the **extra memory for gradients** the method adds (compared in the issue).

Step time: wall time of forward + backward + combination + optimizer step (three copies of the
model, the methods interleaved step by step so that a busy machine slows them alike), median over
the steps that differ between methods (ST + ASR batches) and over all steps.

Quality: after the same number of steps, the primary task's validation loss (token-averaged NLL
over the ST examples of the held-out set) and BLEU (sacrebleu, greedy decoding, ST examples of
all three directions together).

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import logging
import random
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from nemo_emmett.data.batch import TranslationBatch  # noqa: E402
from nemo_emmett.oomptimizer.memory import measure_peak, resident_bytes  # noqa: E402

log = logging.getLogger("benchmarks.mgcm")

METHODS = ("plain", "pcgrad", "mgcm")
PRIMARY = "st"
CLIP = 1.0


# ---------------------------------------------------------------------------------------------
# Set-up: config, data, model
# ---------------------------------------------------------------------------------------------
def compose_config(overrides: list[str]):
    from nemo_emmett.config_store import compose_config as compose

    return compose("salm_t5", overrides, config_dir=REPO / "nemo_emmett" / "conf")


def take_batches(data, n: int) -> list[TranslationBatch]:
    out = []
    for streamed in data.train_dataset():
        out.append(streamed.batch)  # the stream's resume state is not needed here
        if len(out) == n:
            break
    return out


# ---------------------------------------------------------------------------------------------
# Gradient combination per method (the forward pass is done; ``.grad`` is empty)
# ---------------------------------------------------------------------------------------------
class _Backward:
    """Stands in for the LightningModule's ``manual_backward`` outside a Trainer."""

    @staticmethod
    def manual_backward(loss: torch.Tensor, **kw: Any) -> None:
        loss.backward(**kw)


def pcgrad_backward(params: list[torch.nn.Parameter], shares: dict[str, torch.Tensor], rng: random.Random) -> None:
    """Model-level PCGrad, the common implementation: flattened per-task gradients."""
    tasks = list(shares)
    grads, has = [], []
    for i, t in enumerate(tasks):
        for p in params:
            p.grad = None
        shares[t].backward(retain_graph=i < len(tasks) - 1)
        grads.append(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).clone()
                                for p in params]))  # (P,) per task
        has.append(torch.cat([torch.full((p.numel(),), p.grad is not None) for p in params]))  # (P,)
    projected = [g.clone() for g in grads]
    for g_i in projected:
        order = list(range(len(grads)))
        rng.shuffle(order)
        for j in order:
            g_j = grads[j]
            d = torch.dot(g_i, g_j)
            if d < 0:
                g_i -= d * g_j / g_j.norm() ** 2
    merged = torch.stack(projected).sum(dim=0)  # (P,): the task shares sum to the loss
    merged[~torch.stack(has).any(dim=0)] = 0
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = merged[offset: offset + n].view_as(p).clone()
        offset += n


def combine_gradients(method: str, model, loss, params, groups, rng: random.Random) -> None:
    shares = {t: s for t, s in loss.task_shares().items() if s.requires_grad}
    mixed = PRIMARY in shares and len(shares) > 1
    if method == "plain" or not mixed:
        loss.total().backward()
    elif method == "two_pass":  # per-task backward passes, no projection (the memory reference)
        aux = [t for t in shares if t != PRIMARY]
        for t in aux:
            shares[t].backward(retain_graph=True)
        shares[PRIMARY].backward()
    elif method == "pcgrad":
        pcgrad_backward(params, shares, rng)
    elif method == "mgcm":
        model.mgcm.backward(_Backward, shares, loss.total(), groups)
    else:
        raise ValueError(method)


# ---------------------------------------------------------------------------------------------
# Training and evaluation
# ---------------------------------------------------------------------------------------------
def new_optimizer(model):
    built = model.configure_optimizers()
    return built["optimizer"], built.get("lr_scheduler", {}).get("scheduler")


def train(models: dict[str, Any], batches: list[TranslationBatch], seed: int) -> dict[str, dict[str, Any]]:
    """Train each method's model on the same batches, the methods interleaved step by step (so that
    a busy machine slows them alike); the dropout masks of a step are the same for every method."""
    state = {}
    for method, model in models.items():
        opt, sched = new_optimizer(model)
        named = dict(model.named_parameters())
        groups = [[named[n] for n in members] for members in model.mgcm.groups.values()]
        params = [p for p in model.parameters() if p.requires_grad]
        state[method] = (opt, sched, params, groups, random.Random(seed))
        model.train()
    times: dict[str, list[float]] = {m: [] for m in models}
    mixed_times: dict[str, list[float]] = {m: [] for m in models}
    losses: dict[str, float] = {}
    for step, batch in enumerate(batches):
        mixed = PRIMARY in batch.tasks and len(set(batch.tasks)) > 1
        for method, model in models.items():
            opt, sched, params, groups, rng = state[method]
            torch.manual_seed(seed + step)
            t0 = time.perf_counter()
            loss = model.batch_loss(batch)
            combine_gradients(method, model, loss, params, groups, rng)
            torch.nn.utils.clip_grad_norm_(params, CLIP)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if sched is not None:
                sched.step()
            dt = time.perf_counter() - t0
            times[method].append(dt)
            if mixed:
                mixed_times[method].append(dt)
            losses[method] = float(loss.total().detach())
    return {m: {"step_s_median": statistics.median(times[m]),
                "mixed_step_s_median": statistics.median(mixed_times[m]) if mixed_times[m] else None,
                "num_mixed_steps": len(mixed_times[m]), "train_s": sum(times[m]), "final_train_loss": losses[m]}
            for m in models}


@torch.no_grad()
def evaluate(model, val_batches) -> dict[str, float]:
    from nemo_emmett.parts.loss import per_example_nll

    model.eval()
    nll = tokens = 0.0
    hyps, refs = [], []
    for batch in val_batches:
        sel = [i for i, t in enumerate(batch.tasks) if t == PRIMARY]
        if not sel:
            continue
        logits, _ = model.logits(batch)
        losses, counts = per_example_nll(logits, batch.target_ids, batch.target_lens)
        nll += float(losses[sel].sum())
        tokens += float(counts[sel].sum())
        out = model.translate_batch(batch)
        hyps += [out[i] for i in sel]
        refs += [batch.target_texts[i] for i in sel]
    from nemo_emmett.parts.metrics import bleu_metric, bleu_signature

    return {"val_loss": nll / max(tokens, 1.0), "bleu": bleu_metric().corpus_score(hyps, [refs]).score,
            "bleu_signature": bleu_signature(),
            "num_examples": len(hyps)}


def measure_memory(model, batch, seed: int, reps: int = 3) -> dict[str, int]:
    """Peak bytes of each method's backward + combination on ``batch`` from the current weights
    (median of ``reps`` runs after a warm-up)."""
    opt, _ = new_optimizer(model)
    params = [p for p in model.parameters() if p.requires_grad]
    named = dict(model.named_parameters())
    groups = [[named[n] for n in members] for members in model.mgcm.groups.values()]
    device = next(model.parameters()).device
    model.eval()  # no dropout: every method sees the same forward graph
    out = {}
    for method in ("plain", "two_pass", "pcgrad", "mgcm"):
        peaks = []
        for _ in range(1 + reps):  # the first run warms up autograd and the profiler
            model.zero_grad(set_to_none=True)
            gc.collect()
            loss = model.batch_loss(batch)
            rng = random.Random(seed)
            peak = measure_peak(lambda loss=loss, rng=rng, method=method: combine_gradients(  # noqa: B023
                method, model, loss, params, groups, rng), device=device, resident=resident_bytes(model, opt))
            peaks.append(peak.extra)
            del loss
        out[method] = int(statistics.median(peaks[1:]))
    model.zero_grad(set_to_none=True)
    return out


def memory_figures(peaks: dict[str, int]) -> dict[str, Any]:
    out: dict[str, Any] = {"peak_bytes": peaks}
    for m in METHODS:
        out[m] = {"extra_over_plain_bytes": peaks[m] - peaks["plain"],
                  "extra_over_two_pass_bytes": peaks[m] - peaks["two_pass"]}
    for key in ("extra_over_two_pass_bytes", "extra_over_plain_bytes"):
        pc = out["pcgrad"][key]
        out[f"mgcm_over_pcgrad_{key.removesuffix('_bytes')}"] = out["mgcm"][key] / pc if pc > 0 else None
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--val-batches", type=int, default=None, help="validation batches (default: all)")
    parser.add_argument("--quick", action="store_true", help="6 steps, 1 validation batch, 1 memory run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--memory-reps", type=int, default=3, help="measured runs per method (median)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of nemo_emmett/conf/salm_t5.yaml, e.g. data.demo.num_train=40")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.val_batches, args.memory_reps = 6, 1, 1
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)

    from omegaconf import open_dict

    from nemo_emmett.startup import resolve_run

    cfg = compose_config([*args.overrides, "data.num_workers=0"])
    with open_dict(cfg):
        cfg.model.mgcm.enabled = True  # the MGCM step object exists in every run; only "mgcm" uses it
    t0 = time.perf_counter()
    run = resolve_run(cfg)  # sources, then the tokenizer the data module and the model share
    data = run.data_module()
    torch.manual_seed(cfg.seed)
    model = run.build_model()
    batches = take_batches(data, args.steps)
    val_batches = list(data.val_dataloader())
    if args.val_batches is not None:
        val_batches = [b for b in val_batches if PRIMARY in b.tasks][: args.val_batches]
    setup_s = time.perf_counter() - t0
    initial = copy.deepcopy(model.state_dict())
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    grad_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    mixed = next(b for b in batches if PRIMARY in b.tasks and len(set(b.tasks)) > 1)

    first_st = mixed.tasks.index(PRIMARY)
    first_aux = next(i for i, t in enumerate(mixed.tasks) if t != PRIMARY)
    pair = mixed.take_rows(torch.tensor([first_st, first_aux]))  # padding kept; lengths say what is real
    memory = {"batch": memory_figures(measure_memory(model, mixed, cfg.seed, args.memory_reps)),
              "pair": memory_figures(measure_memory(model, pair, cfg.seed, args.memory_reps))}
    log.info("memory: %s", memory)
    model.load_state_dict(initial)
    models = {m: model if m == METHODS[0] else copy.deepcopy(model) for m in METHODS}
    results = train(models, batches, cfg.seed)
    for method, m in models.items():
        results[method].update(evaluate(m, val_batches))
        log.info("%s: %s", method, results[method])
    ratio = {
        **{f"{key}_{name}": fig[key] for name, fig in memory.items()
           for key in ("mgcm_over_pcgrad_extra_over_two_pass", "mgcm_over_pcgrad_extra_over_plain")},
        "mgcm_over_plain_mixed_step_time": results["mgcm"]["mixed_step_s_median"]
        / results["plain"]["mixed_step_s_median"],
        "pcgrad_over_plain_mixed_step_time": results["pcgrad"]["mixed_step_s_median"]
        / results["plain"]["mixed_step_s_median"],
    }
    out = {
        "benchmark": "mgcm",
        "config": {"steps": args.steps, "quick": args.quick, "threads": args.threads, "seed": cfg.seed,
                   "memory_reps": args.memory_reps,
                   "overrides": args.overrides, "trainable_params": n_params, "gradient_bytes": grad_bytes,
                   "num_mgcm_modules": len(model.mgcm.groups), "val_batches": len(val_batches),
                   "memory_batch": {"size": len(mixed.ids), "tasks": sorted(set(mixed.tasks))},
                   "setup_s": setup_s, "device": str(next(model.parameters()).device)},
        "memory": memory,
        "methods": results,
        "ratios": ratio,
    }
    text = json.dumps(out)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)
    return out


if __name__ == "__main__":
    main()
