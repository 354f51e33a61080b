"""Foundation -> speech without forgetting (EMMeTT): a text translation model becomes a speech translator,
and its MT quality is measured before and after.

Stage 1 trains a text-only translation model (``data.tasks=[mt]``) and saves its backbone and tokenizer
as a local Hugging Face folder (``save_pretrained``: ``nemo_emmett.export.save_backbone_pretrained``).
Stage 2 loads that folder as ``model.backbone.pretrained_path``, exactly as a user loads t5-base, and
trains three arms for the same number of steps:

* ``multiplexer``: EMMeTT's multiplexer, the speech tasks (ASR, ST) mixed with the MT data;
* ``speech_only``: sequential fine-tuning on the speech tasks alone;
* ``frozen_lora``: speech tasks alone, the backbone frozen, the perception and LoRA adapters trained.

Every model (the foundation as loaded, and each arm at its last step) is scored on the same evaluation
sources (the config's validation sources, every task: MT BLEU/chrF per direction, ST BLEU, ASR WER),
with sacrebleu's signature. Results: ``<out>/forgetting.json`` and ``<out>/forgetting.md``. A finished
stage is kept (``<out>/results/<stage>.json``) and skipped when the recipe runs again; an unfinished one
is trained again from scratch.

    python recipes/forgetting.py --out outputs/forgetting_demo            # the demo corpus (minutes)
    bash recipes/forgetting_demo.sh                                      # the same, as in docs/fidelity.md
    bash recipes/forgetting_multi30k.sh                                  # Multi30k (CPU hours)

Extra arguments are Hydra overrides for every stage (``--stage1``/``--stage2`` take one for that stage
alone, repeatable).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("forgetting")

ARMS: dict[str, dict[str, Any]] = {
    "multiplexer": {},
    "speech_only": {"data.tasks": ["asr", "st"]},
    "frozen_lora": {"data.tasks": ["asr", "st"], "model.finetune": "lora", "model.lora": {"r": 8, "alpha": 16.0}},
}
"""Stage-2 arms: config values set on top of the stage-2 config (``OmegaConf.update``)."""


def compose(config_name: str, overrides: list[str], values: dict[str, Any]) -> DictConfig:
    from nemo_emmett.config_store import compose_config

    cfg = compose_config(config_name, overrides, config_dir=REPO / "nemo_emmett" / "conf")
    for key, value in values.items():
        OmegaConf.update(cfg, key, value, merge=False)
    return cfg


def stage_overrides(name: str, out: Path, steps: int) -> list[str]:
    """What every stage sets: its name and folder, equal steps, no time limit, no validation during
    training (each model is scored once at the end, on the same sources)."""
    return [f"name={name}", f"exp_manager.exp_dir={out / 'runs'}", f"trainer.max_steps={steps}",
            "trainer.max_time=null", "trainer.limit_val_batches=0", "exp_manager.resume_if_exists=false"]


def evaluate(model: Any, specs: list[Any], batch_size: int = 32) -> dict[str, Any]:
    """Scores of ``model`` on every evaluation source (``bleu/<task>:<src>-<tgt>``, ``chrf/...``,
    ``wer/asr:...``) plus averages per task, and sacrebleu's signatures."""
    from nemo_emmett.inference import score, translate_shar
    from nemo_emmett.parts.metrics import score_signatures

    model.eval()
    hyps, refs, keys = [], [], []
    for spec in specs:
        h, r, k = translate_shar(model, spec.path, batch_size=batch_size, progress=False)
        hyps += h
        refs += r
        keys += k
    scores = score(hyps, refs, keys)
    out: dict[str, Any] = {k: round(float(v), 2) if not k.startswith("wer/") else round(float(v), 4)
                           for k, v in scores.items()}
    for task, metric in (("mt", "bleu"), ("mt", "chrf"), ("st", "bleu"), ("st", "chrf"), ("asr", "wer")):
        vals = [v for k, v in scores.items() if k.startswith(f"{metric}/{task}:")]
        if vals:
            out[f"{metric}/{task}_avg"] = round(sum(vals) / len(vals), 4 if metric == "wer" else 2)
    out["signature"] = score_signatures(k.split("-")[-1] for k in keys)
    return out


def run_stage(name: str, cfg: DictConfig, out: Path) -> tuple[Any, float]:
    """Train one stage from scratch (its run folder removed first); the model at its last step and the wall time."""
    from nemo_emmett.training import train

    shutil.rmtree(out / "runs" / name, ignore_errors=True)
    start = time.perf_counter()
    model = train(cfg)
    return model, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("outputs/forgetting_demo"))
    p.add_argument("--config-name", default="salm_t5")
    p.add_argument("--stage1-steps", type=int, default=1500)
    p.add_argument("--stage2-steps", type=int, default=600)
    p.add_argument("--stage1", action="append", default=[], metavar="OVERRIDE", help="Hydra override, stage 1 only")
    p.add_argument("--stage2", action="append", default=[], metavar="OVERRIDE", help="Hydra override, stage 2 only")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {list(ARMS)}")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every stage")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    arms = [a for a in args.arms.split(",") if a]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        p.error(f"--arms: unknown {unknown}; expected some of {list(ARMS)}")

    from nemo_emmett.data.sources import SourceSpec
    from nemo_emmett.models.backbone_folder import save_backbone_pretrained
    from nemo_emmett.models.base import TranslationModel
    from nemo_emmett.startup import model_class, resolve_run, resolve_sources

    out = args.out.resolve()
    (out / "results").mkdir(parents=True, exist_ok=True)
    foundation = out / "stage1_hf"
    results: dict[str, Any] = {}

    def done(stage: str) -> dict[str, Any] | None:
        f = out / "results" / f"{stage}.json"
        return json.loads(f.read_text()) if f.is_file() else None

    def keep(stage: str, result: dict[str, Any]) -> None:
        results[stage] = result
        tmp = out / "results" / f".{stage}.json.tmp"
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        tmp.replace(out / "results" / f"{stage}.json")

    # ---- the evaluation sources: the stage-2 config's validation sources, every task ----------------
    base = compose(args.config_name, [*args.overrides, *args.stage2], {})
    eval_specs = [SourceSpec(**s) for s in resolve_sources(base.data).validation_sources]
    log.info("evaluation sources: %s", ", ".join(f"{s.name} ({s.task})" for s in eval_specs))

    # ---- stage 1: text-only translation, saved as a Hugging Face folder ------------------------------
    if (r := done("stage1")) is not None and (foundation / "config.json").is_file():
        results["stage1"] = r
        log.info("stage 1: done before (%s)", foundation)
    else:
        cfg1 = compose(args.config_name, [*stage_overrides("forgetting_stage1", out, args.stage1_steps),
                                          *args.overrides, *args.stage1], {"data.tasks": ["mt"]})
        model1, wall = run_stage("forgetting_stage1", cfg1, out)
        save_backbone_pretrained(model1, foundation, overwrite=True)
        keep("stage1", {"steps": int(model1.trainer.global_step), "wall_s": round(wall, 1),
                        "scores": evaluate(model1, [s for s in eval_specs if s.task == "mt"])})

    # ---- stage 2 at step 0: the foundation as loaded (its MT is the "before") ------------------------
    stage2 = [f"model.backbone.pretrained_path={foundation}", *args.overrides, *args.stage2]
    if (r := done("foundation")) is not None:
        results["foundation"] = r
    else:
        run = resolve_run(compose(args.config_name, stage2, {}))
        model0: TranslationModel = run.build_model()
        keep("foundation", {"steps": 0, "scores": evaluate(model0, eval_specs)})

    # ---- stage 2 arms, equal steps -------------------------------------------------------------------
    for arm in arms:
        if (r := done(arm)) is not None:
            results[arm] = r
            log.info("arm %s: done before", arm)
            continue
        name = f"forgetting_{arm}"
        cfg = compose(args.config_name, [*stage_overrides(name, out, args.stage2_steps), *stage2], ARMS[arm])
        model_class(cfg.model_class)  # a bad class fails before training
        model, wall = run_stage(name, cfg, out)
        keep(arm, {"steps": int(model.trainer.global_step), "wall_s": round(wall, 1),
                   "scores": evaluate(model, eval_specs)})

    table = results_table(results, arms)
    (out / "forgetting.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "forgetting.md").write_text(table + "\n")
    print(table)
    return 0


def results_table(results: dict[str, Any], arms: list[str]) -> str:
    """Markdown: one row per model, MT before/after (and its change), ST BLEU, ASR WER, steps, wall time."""
    before = results["foundation"]["scores"]
    rows = ["| model | steps | wall (s) | MT BLEU | MT chrF | MT BLEU change | ST BLEU | ASR WER |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]

    def cell(s: dict[str, Any], key: str, fmt: str = "{:.2f}") -> str:
        return fmt.format(s[key]) if key in s else "-"

    stage1 = results.get("stage1")
    if stage1 is not None:
        s = stage1["scores"]
        rows.append(f"| stage 1 (text only, own tokenizer) | {stage1['steps']} | {stage1['wall_s']} | "
                    f"{cell(s, 'bleu/mt_avg')} | {cell(s, 'chrf/mt_avg')} | | | |")
    rows.append(f"| foundation, loaded (stage 2 at step 0) | 0 | | {cell(before, 'bleu/mt_avg')} | "
                f"{cell(before, 'chrf/mt_avg')} | | {cell(before, 'bleu/st_avg')} | "
                f"{cell(before, 'wer/asr_avg', '{:.3f}')} |")
    for arm in arms:
        r = results[arm]
        s = r["scores"]
        change = (f"{s['bleu/mt_avg'] - before['bleu/mt_avg']:+.2f}"
                  if "bleu/mt_avg" in s and "bleu/mt_avg" in before else "-")
        rows.append(f"| {arm} | {r['steps']} | {r['wall_s']} | {cell(s, 'bleu/mt_avg')} | {cell(s, 'chrf/mt_avg')} | "
                    f"{change} | {cell(s, 'bleu/st_avg')} | {cell(s, 'wer/asr_avg', '{:.3f}')} |")
    signature = before.get("signature", {})
    rows.append("")
    rows.append(f"BLEU: `{signature.get('bleu', '?')}`; chrF: `{signature.get('chrf', '?')}`")
    return "\n".join(rows)


if __name__ == "__main__":
    raise SystemExit(main())
