#!/usr/bin/env python
"""Time to quality: stage 1 of the forgetting experiment (Multi30k text en<->de/fr/cs, both directions) trained
by a plain loop and by our pipeline, side by side on the same cores for the same wall time.

    python benchmarks/time_to_bleu.py --minutes 60                 # the measurement (docs/fidelity.md)
    python benchmarks/time_to_bleu.py --smoke --data DIR           # tiny: 300 lines, 2 marks of 15 s (the test)

Both arms train the same T5 (``nemo_emmett/conf/forgetting_multi30k.yaml``, i.e. ``salm_t5_multi30k``'s backbone shape,
random init, the same seed) with the same SentencePiece tokenizer (trained once by the pipeline, before the
arms start), the same target-language tag prompt (``<de>`` then the source ids, no EOS; the target ids then
EOS), the same optimizer and LR schedule (``model.optim``: AdamW, no decay on biases and norms,
NeMo's ``InverseSquareRootAnnealing``), the same gradient clipping and fp32:

* ``plain``: what a user writes without us: ``T5ForConditionalGeneration``, every training pair of the six
  directions tokenized up front, random batches of a fixed size (``--plain-batch-size``) padded to their
  longest, HF's loss (labels, pad = -100).
* ``ours``: ``nemo_emmett.training.train`` on the Shar of the same pairs, ``data.tasks=[mt]``: multiplexer,
  2D bucketing, batch sizes from ``data.text_buckets.max_padded_size`` (``--oomptimizer``: the OOMptimizer's).

The two run in two processes started together, each pinned to half of the cores (``os.sched_setaffinity``,
``torch.set_num_threads``). Clock: it starts in each process after its imports (``import nemo`` is not
training) and counts everything after: tokenization, bin estimation, the OOMptimizer, data loading,
steps. At every mark (``--mark-minutes``) the arm saves its T5 as a Hugging Face folder with the clock
paused; after both arms end, the parent scores every saved folder with the same code (greedy decoding,
``model.decoding.max_new_tokens``) on test_2016_flickr, all six directions, sacrebleu BLEU and chrF (with
their signatures). So scoring never counts as training time, and both arms are scored alike.

Written to ``--out`` (and printed as the last line): per arm, per mark (wall s, steps, examples, BLEU, chrF
per direction and averaged); at the last mark both reached, each arm's BLEU/chrF and the ratio ours/plain;
the wall time at which each first reached average BLEU 10 and 20, and en-de BLEU 10 and 20 (the first mark
at or above it: the resolution is one mark; null if never), and the ratio ours/plain.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MULTI30K = REPO.parent / "shared" / "data" / "multi30k"
DIRECTIONS = ("en-de", "de-en", "en-fr", "fr-en", "en-cs", "cs-en")
THRESHOLDS = (10.0, 20.0)
log = logging.getLogger("benchmarks.time_to_bleu")


# ---- data: a slice (smoke), Shar for our pipeline, the tokenizer --------------------------------------
def slice_corpus(src: Path, dst: Path, train_lines: int, test_lines: int) -> Path:
    """The first lines of every train and test_2016_flickr file of ``src``, written to ``dst``."""
    dst.mkdir(parents=True, exist_ok=True)
    for lang in sorted({lang for d in DIRECTIONS for lang in d.split("-")}):
        for split, n in (("train", train_lines), ("test_2016_flickr", test_lines)):
            with gzip.open(src / f"{split}.{lang}.gz", "rt", encoding="utf-8") as f:
                lines = [line for _, line in zip(range(n), f)]
            with gzip.open(dst / f"{split}.{lang}.gz", "wt", encoding="utf-8") as f:
                f.writelines(lines)
    return dst


def prepare_shar(data: Path, shar: Path) -> None:
    """Shar of both directions for train and test (``emmett-prepare bitext``; complete folders are skipped)."""
    from nemo_emmett.data.prepare.cli import main as prepare

    for dataset, split in (("multi30k", "train"), ("multi30k_test", "test_2016_flickr")):
        rc = prepare(["bitext", "--dataset", dataset, "--out", str(shar), "--pairs", ",".join(DIRECTIONS),
                      "--no-progress", "--src-template", f"{data}/{split}.{{src_lang}}.gz",
                      "--tgt-template", f"{data}/{split}.{{tgt_lang}}.gz"])
        if rc != 0:
            raise RuntimeError(f"preparing {dataset} from {data} failed (exit {rc})")


def compose(shar: Path, work: Path, overrides: list[str]):
    from nemo_emmett.config_store import compose_config

    return compose_config("forgetting_multi30k", [f"shar_root={shar}", "data.tasks=[mt]", "name=time_to_bleu",
                                                  f"exp_manager.exp_dir={work / 'runs'}", *overrides],
                          config_dir=REPO / "nemo_emmett" / "conf")


# ---- the arms (child processes) --------------------------------------------------------------------------
class Clock:
    """Training wall time: since the start, less the pauses (checkpoint saves)."""

    def __init__(self) -> None:
        self.start, self.paused = time.perf_counter(), 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start - self.paused


class Marks:
    """Save at every mark (clock paused), and say when the budget is spent."""

    def __init__(self, clock: Clock, mark_s: float, num_marks: int, folder: Path) -> None:
        self.clock, self.mark_s, self.num_marks, self.folder = clock, mark_s, num_marks, folder
        self.records: list[dict[str, Any]] = []

    def due(self) -> bool:
        return self.clock.elapsed() >= self.mark_s * (len(self.records) + 1)

    def done(self) -> bool:
        return len(self.records) >= self.num_marks

    def save(self, save_fn, steps: int, examples: int, tokens: int) -> None:
        wall = self.clock.elapsed()
        t = time.perf_counter()
        path = self.folder / f"mark{len(self.records) + 1}"
        save_fn(path)
        self.clock.paused += time.perf_counter() - t
        self.records.append({"mark": len(self.records) + 1, "wall_s": round(wall, 1), "steps": steps,
                             "examples": examples, "target_tokens": tokens, "path": str(path)})
        log.info("mark %d: %.0f s, %d steps", len(self.records), wall, steps)


def pin(cores: list[int]) -> None:
    import torch

    os.sched_setaffinity(0, cores)
    torch.set_num_threads(len(cores))


def run_plain(spec: dict[str, Any], clock: Clock, marks: Marks) -> None:
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    from nemo_emmett.models.config import parse_model_config
    from nemo_emmett.parts.optim import build_optimizer_and_scheduler
    from nemo_emmett.parts.text_processor import TextProcessor

    text = TextProcessor(spm_path=spec["spm"], prompt_template=spec["prompt_template"])
    pairs = []  # (input ids, target ids) of every training pair, six directions
    for d in DIRECTIONS:
        s, t = d.split("-")
        with gzip.open(f"{spec['data']}/train.{s}.gz", "rt") as fs, gzip.open(f"{spec['data']}/train.{t}.gz", "rt") as ft:
            prompt = text.prompt_ids(task="mt", source_lang=s, target_lang=t)
            lines = [(a.strip(), b.strip()) for a, b in zip(fs, ft)]
            sources = text.tok.encode([a for a, _ in lines])  # SentencePiece encodes a list in C++ threads
            targets = text.tok.encode([b for _, b in lines])
            pairs += [(prompt + a, [*b, text.eos_id]) for a, b in zip(sources, targets)]
    torch.manual_seed(spec["seed"])
    backbone = dict(spec["backbone"])
    backbone.pop("model_type")
    model = T5ForConditionalGeneration(T5Config(**{"vocab_size": text.vocab_size, "pad_token_id": text.pad_id,
                                                   "eos_token_id": text.eos_id, **backbone},
                                                decoder_start_token_id=text.pad_id)).train()
    optim_cfg = parse_model_config(spec["model"], spec["model_config_class"]).optim
    opt = build_optimizer_and_scheduler(model, optim_cfg)
    optimizer, scheduler = opt["optimizer"], opt.get("lr_scheduler", {}).get("scheduler")
    rng = random.Random(spec["seed"])
    bs, steps, examples, tokens = spec["plain_batch_size"], 0, 0, 0
    while not marks.done() and clock.elapsed() < spec["cap_s"]:
        batch = rng.sample(pairs, bs)
        src = torch.nn.utils.rnn.pad_sequence([torch.tensor(a) for a, _ in batch], batch_first=True,
                                              padding_value=text.pad_id)  # (B, S)
        tgt = torch.nn.utils.rnn.pad_sequence([torch.tensor(b) for _, b in batch], batch_first=True,
                                              padding_value=-100)  # (B, U)
        loss = model(input_ids=src, attention_mask=(src != text.pad_id).long(), labels=tgt).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), spec["gradient_clip_val"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if scheduler is not None:
            scheduler.step()
        steps, examples, tokens = steps + 1, examples + bs, tokens + int((tgt != -100).sum())
        if marks.due():
            marks.save(lambda p: model.save_pretrained(str(p)), steps, examples, tokens)


def run_ours(spec: dict[str, Any], clock: Clock, marks: Marks) -> None:
    import lightning.pytorch as pl
    from omegaconf import OmegaConf

    import nemo_emmett.training as training
    from nemo_emmett.models.backbone_folder import save_backbone_pretrained

    counts = {"examples": 0, "tokens": 0}

    class WallMarks(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            b = getattr(batch, "batch", batch)
            counts["examples"] += len(b.ids)
            counts["tokens"] += int(b.target_lens.sum())
            if marks.due():
                marks.save(lambda p: save_backbone_pretrained(pl_module, p, overwrite=True),
                           trainer.global_step, counts["examples"], counts["tokens"])
            if marks.done():
                trainer.should_stop = True

    build = training.build_callbacks  # train() builds its callbacks itself: ours is added to them
    training.build_callbacks = lambda cfg: [*build(cfg), WallMarks()]
    training.train(OmegaConf.create(spec["config"]))


def child(spec_path: Path, arm: str) -> int:
    spec = json.loads(spec_path.read_text())
    cores = spec["cores"][arm]
    pin(cores)
    import torch  # noqa: F401  (imports before the clock starts)
    import transformers  # noqa: F401

    if arm == "ours":  # what train() would import lazily, on the clock
        import lhotse  # noqa: F401
        import nemo.utils.exp_manager  # noqa: F401

        import nemo_emmett.startup  # noqa: F401
        import nemo_emmett.training  # noqa: F401
    from nemo_emmett.models.config import SalmT5Config

    spec["model_config_class"] = SalmT5Config
    clock = Clock()
    marks = Marks(clock, spec["mark_s"], spec["num_marks"], Path(spec["work"]) / arm)
    (run_plain if arm == "plain" else run_ours)(spec, clock, marks)
    (Path(spec["work"]) / f"{arm}.marks.json").write_text(json.dumps(marks.records, indent=2))
    return 0


# ---- scoring (parent, after both arms) -----------------------------------------------------------------
def read_test(data: Path, lines: int | None) -> dict[str, tuple[list[str], list[str]]]:
    out = {}
    for d in DIRECTIONS:
        s, t = d.split("-")
        with gzip.open(data / f"test_2016_flickr.{s}.gz", "rt") as fs, gzip.open(data / f"test_2016_flickr.{t}.gz", "rt") as ft:
            pairs = [(a.strip(), b.strip()) for a, b in zip(fs, ft)][:lines]
        out[d] = ([a for a, _ in pairs], [b for _, b in pairs])
    return out


def score_folder(folder: Path, test: dict, text: Any, max_new_tokens: int, batch_size: int = 64) -> dict[str, Any]:
    """Greedy translations of every test direction by the HF model in ``folder``; BLEU and chrF."""
    import torch
    from sacrebleu.metrics import BLEU, CHRF
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(str(folder), local_files_only=True).eval()
    out: dict[str, Any] = {}
    for d, (sources, refs) in test.items():
        s, t = d.split("-")
        prompt = text.prompt_ids(task="mt", source_lang=s, target_lang=t)
        hyps = []
        for i in range(0, len(sources), batch_size):
            ids = [torch.tensor(prompt + text.encode(x)) for x in sources[i:i + batch_size]]
            x = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True, padding_value=text.pad_id)  # (B, S)
            with torch.no_grad():
                y = model.generate(input_ids=x, attention_mask=(x != text.pad_id).long(), num_beams=1,
                                   do_sample=False, max_new_tokens=max_new_tokens)  # (B, 1 + U)
            hyps += [text.decode(row) for row in y[:, 1:].tolist()]
        out[f"bleu/{d}"] = round(BLEU().corpus_score(hyps, [refs]).score, 2)
        out[f"chrf/{d}"] = round(CHRF().corpus_score(hyps, [refs]).score, 2)
    for m in ("bleu", "chrf"):
        out[f"{m}/avg"] = round(sum(out[f"{m}/{d}"] for d in test) / len(test), 2)
    return out


def first_reaching(marks: list[dict[str, Any]], key: str, threshold: float) -> float | None:
    return next((m["wall_s"] for m in marks if m[key] >= threshold), None)


def report(arms: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    n = min(len(m) for m in arms.values())
    equal = {arm: {k: marks[n - 1][k] for k in ("wall_s", "steps", "bleu/avg", "chrf/avg", "bleu/en-de")}
             for arm, marks in arms.items()} if n else {}

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    reach = {arm: {f"{key}>={t:g}": first_reaching(marks, key, t) for key in ("bleu/avg", "bleu/en-de")
                   for t in THRESHOLDS} for arm, marks in arms.items()}
    return {"at_equal_time": equal,
            "ratio_ours_over_plain": {k: ratio(equal.get("ours", {}).get(k), equal.get("plain", {}).get(k))
                                      for k in ("bleu/avg", "chrf/avg", "bleu/en-de")} if n else {},
            "wall_s_to_reach": reach,
            "time_ratio_ours_over_plain": {k: ratio(reach["ours"][k], reach["plain"][k]) for k in reach["ours"]}}


def hms(seconds: float) -> str:
    """Lightning's ``max_time`` format, ``dd:hh:mm:ss``."""
    s = int(seconds)
    return f"{s // 86400:02d}:{s % 86400 // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


# ---- parent --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=60.0, help="training wall time of each arm")
    p.add_argument("--mark-minutes", type=float, default=10.0, help="save (and later score) every this often")
    p.add_argument("--smoke", action="store_true", help="tiny: 300 training lines, 20 test lines, 2 marks of 15 s")
    p.add_argument("--data", type=Path, default=MULTI30K, help="Multi30k folder (train/test_2016_flickr.<lang>.gz)")
    p.add_argument("--work", type=Path, default=REPO / "outputs" / "time_to_bleu")
    p.add_argument("--out", type=Path, default=None, help="results JSON (default WORK/time_to_bleu.json)")
    p.add_argument("--cores", type=int, default=None, help="cores in all, split in half (default: all usable)")
    p.add_argument("--plain-batch-size", type=int, default=64)
    p.add_argument("--oomptimizer", action="store_true", help="ours: batch sizes from the OOMptimizer")
    p.add_argument("--test-lines", type=int, default=None, help="score on the first N test sentences only")
    p.add_argument("--child", choices=("plain", "ours"), help=argparse.SUPPRESS)
    p.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", help="Hydra overrides of forgetting_multi30k (both arms)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.child:
        return child(args.spec, args.child)
    if not (args.data / "train.en.gz").is_file():
        p.error(f"--data {args.data}: no train.en.gz there; expected the Multi30k folder (../shared/data/multi30k)")
    work = args.work.resolve()
    data, overrides = args.data.resolve(), list(args.overrides)
    mark_s, minutes, test_lines = args.mark_minutes * 60, args.minutes, args.test_lines
    if args.smoke:
        data = slice_corpus(data, work / "data", 300, 20)
        mark_s, minutes = 15.0, 0.5
        overrides = ["data.tokenizer.vocab_size=300", "data.estimation_examples=200", *overrides]
    num_marks = max(1, int(round(minutes * 60 / mark_s)))
    cap_s = 2 * num_marks * mark_s + 300  # a safety stop only: each arm stops after its last mark
    shar = work / "shar"
    prepare_shar(data, shar)

    from omegaconf import OmegaConf

    from nemo_emmett.startup import resolve_run

    cores = sorted(os.sched_getaffinity(0))[:args.cores]
    half = max(1, len(cores) // 2)
    split = {"plain": cores[:half], "ours": cores[half:] or cores[:half]}
    cfg = compose(shar, work, overrides)
    run = resolve_run(cfg)  # trains (or finds cached) the SentencePiece model both arms use
    spm = run.text.spm_path
    threads = len(split["ours"])
    ours = compose(shar, work, [f"data.tokenizer.model_path={spm}", "threads.mode=fixed", f"threads.threads={threads}",
                                f"data.num_workers={0 if threads == 1 else 1}", "trainer.max_steps=10000000",
                                f"trainer.max_time={hms(cap_s)}", "trainer.limit_val_batches=0",
                                "exp_manager.resume_if_exists=false", "exp_manager.create_checkpoint_callback=false",
                                f"oomptimizer.enabled={str(args.oomptimizer).lower()}", *overrides])
    shutil.rmtree(work / "runs", ignore_errors=True)
    for arm in ("plain", "ours"):
        shutil.rmtree(work / arm, ignore_errors=True)
    spec = {"data": str(data), "work": str(work), "spm": spm, "seed": int(cfg.seed), "cores": split,
            "mark_s": mark_s, "num_marks": num_marks, "cap_s": cap_s, "plain_batch_size": args.plain_batch_size,
            "prompt_template": run.model["tokenizer"]["prompt_template"], "model": run.model,
            "backbone": run.model["backbone"]["config"], "gradient_clip_val": float(cfg.trainer.gradient_clip_val),
            "config": OmegaConf.to_container(ours, resolve=True)}
    spec_path = work / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=2, default=str))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    procs = {arm: subprocess.Popen([sys.executable, __file__, "--child", arm, "--spec", str(spec_path)], env=env)
             for arm in ("plain", "ours")}  # started together
    failed = [arm for arm, proc in procs.items() if proc.wait() != 0]
    if failed:
        raise RuntimeError(f"arm(s) {failed} failed (their output is above)")

    import torch
    from sacrebleu.metrics import BLEU, CHRF

    torch.set_num_threads(len(cores))
    test = read_test(data, test_lines)
    max_new = int(run.model["decoding"]["max_new_tokens"]) if "decoding" in run.model else 48
    arms: dict[str, list[dict[str, Any]]] = {}
    for arm in ("plain", "ours"):
        arms[arm] = json.loads((work / f"{arm}.marks.json").read_text())
        for m in arms[arm]:
            m.update(score_folder(Path(m.pop("path")), test, run.text, max_new))
    signatures = {}
    for name, metric in (("bleu", BLEU()), ("chrf", CHRF())):
        metric.corpus_score(["x"], [["x"]])  # the signature needs the number of references
        signatures[name] = str(metric.get_signature())
    result = {"minutes": minutes, "mark_s": mark_s, "cores": split, "plain_batch_size": args.plain_batch_size,
              "oomptimizer": args.oomptimizer, "test": "test_2016_flickr", "test_lines": len(next(iter(test.values()))[0]),
              "signature": signatures, "arms": arms, **report(arms)}
    out = args.out or work / "time_to_bleu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
