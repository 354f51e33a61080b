"""The MGCM paper's experiment, scaled down: multi-task simultaneous speech translation (ST primary, ASR
and MT auxiliary) trained three ways, each scored at several latencies.

Every arm trains the same SALM-T5 for the same steps on the same data stream, in the setting of the
paper: a streaming speech encoder (FastConformer with limited right context and causal convolutions),
prefix-to-prefix (wait-k) training with multi-path k (one model for every latency), and steps that
fuse one audio batch with one text batch (``data.fusion=zip``), so that ST, ASR and MT gradients meet
in every step. The arms differ only in how the step's gradient is formed:

* ``plain``: the summed multi-task loss, one backward pass (Lightning's automatic optimization);
* ``mgcm``: MGCM at module level (``model.mgcm.granularity=module``): each auxiliary task's gradient
  projected off ST's, module by module, where the two conflict;
* ``model_level``: the same projection over the whole model's gradient as one vector
  (``granularity=component`` with one component ``.*``): model-level gradient conflict mitigation, the
  PCGrad rule with ST as the fixed primary (ST's gradient is never projected).

Each arm's last model is decoded simultaneously (``nemo_emmett.simul.evaluate.latency_curve``: wait-k
at every lag of ``--ks``, then offline) on the ST evaluation sources (the config's ST validation sources,
``--eval-utterances`` per direction): BLEU, chrF, AL, LAAL, DAL, AP (and computation-aware variants)
per direction and their mean over directions. MT BLEU and ASR WER (greedy, ``translate_shar``) show what
the auxiliary tasks kept. The MGCM arms' conflict statistics per module type (``mgcm/st-<aux>/...``, as
logged to TensorBoard during training) are averaged over the run and over its last quarter.

Results: ``<out>/simulst_mgcm.json``, ``<out>/simulst_mgcm.md`` (the tables of docs/fidelity.md) and
``<out>/simulst_mgcm.png`` (BLEU against AL and LAAL, one line per arm). A finished arm is kept
(``<out>/results/<arm>.json``) and skipped when the recipe runs again (``rm -r <out>`` to redo).

    bash recipes/simulst_mgcm.sh                      # demo corpus (docs/fidelity.md)
    bash recipes/simulst_mgcm.sh multi30k             # Multi30k speech (recipes/multi30k.sh's Shar)
    python recipes/simulst_mgcm.py --out outputs/simulst_mgcm --steps 600 trainer.max_time=null

Extra arguments are Hydra overrides for every arm.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from statistics import mean
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from forgetting import compose, evaluate, run_stage, stage_overrides  # noqa: E402  (the shared recipe steps)

log = logging.getLogger("simulst_mgcm")

SIMUL_OVERRIDES = [
    "model.simul.enabled=true", "model.simul.multi_path=true", "model.audio_position=after_prompt",
    "model.perception.att_context_size=[16,1]", "model.perception.causal_convolutions=true", "data.fusion=zip",
]
"""The SimulST setting every arm shares: streaming encoder, multi-path wait-k, fused audio + text steps."""

ARMS: dict[str, dict[str, Any]] = {
    "plain": {"model.mgcm.enabled": False},
    "mgcm": {"model.mgcm.enabled": True, "model.mgcm.granularity": "module"},
    "model_level": {"model.mgcm.enabled": True, "model.mgcm.granularity": "component",
                    "model.mgcm.components": {"model": ".*"}, "model.mgcm.module_types": {"model": ".*"}},
}
"""Config values per arm (``OmegaConf.update`` on top of the shared config)."""

LATENCY_KEYS = ("AL", "LAAL", "DAL", "AP", "AL_CA", "LAAL_CA")


def st_eval_sets(specs: list[Any], limit: int | None) -> list[dict[str, Any]]:
    """Per ST evaluation source: its direction, 1-D float audios, references and sample rate (the first
    ``limit`` utterances, in the Shar's order)."""
    import torch

    from nemo_emmett.data.examples import target_text
    from nemo_emmett.data.shar import read_shar_dir

    sets = []
    for spec in specs:
        audios, refs, rates = [], [], set()
        for n, cut in enumerate(read_shar_dir(spec.path)):
            if limit is not None and n >= limit:
                break
            audio = torch.from_numpy(cut.load_audio()).float()  # (channels, T)
            audios.append(audio.mean(dim=0))  # (T,)
            refs.append(target_text(cut))
            rates.add(int(cut.sampling_rate))
        if len(rates) != 1:
            raise ValueError(f"{spec.path}: expected one sample rate over its audio, got {sorted(rates)}")
        sets.append({"name": spec.name, "source_lang": spec.source_lang, "target_lang": spec.target_lang,
                     "audios": audios, "references": refs, "sample_rate": rates.pop()})
    return sets


def latency_rows(model: Any, sets: list[dict[str, Any]], ks: list[int]) -> dict[str, list[dict[str, Any]]]:
    """``latency_curve`` per ST direction: {direction: rows (one per lag, then offline)}."""
    from nemo_emmett.simul.evaluate import latency_curve

    model.eval()
    out = {}
    for s in sets:
        rows = latency_curve(model, s["audios"], s["references"], ks=ks, source_lang=s["source_lang"],
                             target_lang=s["target_lang"], sample_rate=s["sample_rate"])
        out[f"{s['source_lang']}-{s['target_lang']}"] = [{k: (round(v, 2) if isinstance(v, float) else v)
                                                          for k, v in row.items()} for row in rows]
    return out


def mean_over_directions(curves: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per lag: BLEU, chrF and the latencies averaged over the directions."""
    per_lag = list(zip(*curves.values()))
    return [{"k": rows[0]["k"], **{key: round(mean(r[key] for r in rows), 2)
                                   for key in ("BLEU", "chrF", *LATENCY_KEYS) if all(key in r for r in rows)}}
            for rows in per_lag]


def conflict_stats(run_dir: Path) -> dict[str, dict[str, float]]:
    """The ``mgcm/...`` scalars a run logged to TensorBoard: per tag, the mean over all logged windows,
    over the last quarter of them, and the number of windows."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(run_dir.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            if tag.startswith("mgcm/") and tag != "mgcm/skipped_steps":
                series.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    out = {}
    for tag, points in sorted(series.items()):
        values = [v for _, v in sorted(set(points))]
        tail = values[-max(1, len(values) // 4):]
        out[tag] = {"mean": round(mean(values), 4), "last_quarter": round(mean(tail), 4), "windows": len(values)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("outputs/simulst_mgcm"))
    p.add_argument("--config-name", default="salm_t5")
    p.add_argument("--steps", type=int, default=1200, help="training steps per arm (equal for every arm)")
    p.add_argument("--ks", default="1,3,5,7", help="wait-k lags to evaluate (then offline)")
    p.add_argument("--eval-utterances", type=int, default=100, help="ST utterances per direction (0: all)")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {list(ARMS)}")
    p.add_argument("--combine", nargs="+", type=Path, metavar="RUN_OUT",
                   help="no training: average the results of these finished runs (e.g. seeds) into --out")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every arm")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.combine:
        return combine_runs(args.combine, args.out)
    arms = [a for a in args.arms.split(",") if a]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        p.error(f"--arms: unknown {unknown}; expected some of {list(ARMS)}")
    try:
        ks = [int(k) for k in args.ks.split(",") if k]
    except ValueError:
        p.error(f"--ks: expected comma-separated positive integers, got {args.ks!r}")
    if not ks or min(ks) <= 0:
        p.error(f"--ks: expected comma-separated positive integers, got {args.ks!r}")

    from nemo_emmett.data.sources import SourceSpec
    from nemo_emmett.startup import model_class, resolve_sources

    out = args.out.resolve()
    (out / "results").mkdir(parents=True, exist_ok=True)
    shared = [*SIMUL_OVERRIDES, *args.overrides]
    base = compose(args.config_name, shared, {})
    specs = [SourceSpec(**s) for s in resolve_sources(base.data).validation_sources]
    st_specs = [s for s in specs if s.task == "st"]
    if not st_specs:
        raise SystemExit(f"config {args.config_name}: no ST validation source to evaluate latency on "
                         f"(data.validation_sources: {[s.name for s in specs]})")
    other_specs = [s for s in specs if s.task != "st"]
    sets = st_eval_sets(st_specs, args.eval_utterances or None)
    log.info("ST evaluation: %s", ", ".join(f"{s['name']} ({len(s['audios'])} utterances)" for s in sets))

    results: dict[str, Any] = {}
    for arm in arms:
        f = out / "results" / f"{arm}.json"
        if f.is_file():
            results[arm] = json.loads(f.read_text())
            log.info("arm %s: done before (%s)", arm, f)
            continue
        name = f"simulst_{arm}"
        cfg = compose(args.config_name, [*stage_overrides(name, out, args.steps), *shared], ARMS[arm])
        model_class(cfg.model_class)  # a bad class fails before training
        model, wall = run_stage(name, cfg, out)
        start = time.perf_counter()
        curves = latency_rows(model, sets, ks)
        result = {"steps": int(model.trainer.global_step), "train_wall_s": round(wall, 1),
                  "curves": curves, "mean": mean_over_directions(curves),
                  "offline_greedy": evaluate(model, other_specs) if other_specs else {},
                  "conflicts": conflict_stats(out / "runs" / name),
                  "eval_wall_s": round(time.perf_counter() - start, 1)}
        tmp = f.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        tmp.replace(f)
        results[arm] = result

    meta = {"config": args.config_name, "steps": args.steps, "ks": ks, "overrides": shared,
            "eval": {s["name"]: len(s["audios"]) for s in sets}}
    (out / "simulst_mgcm.json").write_text(json.dumps({"meta": meta, "arms": results}, indent=2) + "\n")
    table = results_tables(results)
    (out / "simulst_mgcm.md").write_text(table + "\n")
    plot(results, out / "simulst_mgcm.png")
    print(table)
    return 0


def combine_runs(runs: list[Path], out: Path) -> int:
    """The runs' results averaged per arm and lag (numbers only; a run lacking an arm is an error),
    written as ``<out>/simulst_mgcm.{json,md,png}``, with a per-run BLEU table."""
    loaded = []
    for run in runs:
        f = run / "simulst_mgcm.json"
        if not f.is_file():
            raise SystemExit(f"--combine: {f} not found (run the recipe with --out {run} first)")
        loaded.append(json.loads(f.read_text()))
    arms = list(loaded[0]["arms"])
    for run, d in zip(runs, loaded):
        if list(d["arms"]) != arms:
            raise SystemExit(f"--combine: {run} has arms {list(d['arms'])}, {runs[0]} has {arms}")
    combined = {arm: average([d["arms"][arm] for d in loaded]) for arm in arms}
    out.mkdir(parents=True, exist_ok=True)
    meta = {"runs": [str(r) for r in runs], "metas": [d["meta"] for d in loaded]}
    (out / "simulst_mgcm.json").write_text(json.dumps({"meta": meta, "arms": combined}, indent=2) + "\n")
    lags = [row["k"] for row in combined[arms[0]]["mean"]]
    per_run = ["| arm | " + " | ".join(f"BLEU k={k}" for k in lags) + " |", "|---|" + "---:|" * len(lags)]
    for arm in arms:
        cells = [" / ".join(str(d["arms"][arm]["mean"][i]["BLEU"]) for d in loaded) for i in range(len(lags))]
        per_run.append(f"| {arm} | " + " | ".join(cells) + " |")
    table = (f"Mean of {len(runs)} runs ({', '.join(r.name for r in runs)}):\n\n" + results_tables(combined)
             + "\n\nST BLEU per run (mean over directions):\n\n" + "\n".join(per_run))
    (out / "simulst_mgcm.md").write_text(table + "\n")
    plot(combined, out / "simulst_mgcm.png")
    print(table)
    return 0


def average(items: list[Any]) -> Any:
    """The element-wise mean of equally shaped JSON values: numbers averaged (rounded to 4 places),
    lists and dicts recursively (keys present in every item), anything else taken from the first."""
    first = items[0]
    if isinstance(first, bool) or not isinstance(first, (int, float, list, dict)):
        return first
    if isinstance(first, (int, float)):
        return round(mean(items), 4) if all(isinstance(x, (int, float)) for x in items) else first
    if isinstance(first, list):
        return [average(list(xs)) for xs in zip(*items)]
    return {k: average([x[k] for x in items]) for k in first if all(isinstance(x, dict) and k in x for x in items)}


def results_tables(results: dict[str, Any]) -> str:
    """Markdown: quality against latency per arm and lag (mean over ST directions), the auxiliary
    tasks' offline scores, and the conflict statistics per module type."""
    lines = ["| arm | k | ST BLEU | ST chrF | AL (ms) | LAAL (ms) | DAL (ms) | AP | AL_CA (ms) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for arm, r in results.items():
        for row in r["mean"]:
            cells = [row.get(key, "-") for key in ("BLEU", "chrF", "AL", "LAAL", "DAL", "AP", "AL_CA")]
            lines.append(f"| {arm} | {row['k']} | " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "| arm | steps | train wall (s) | MT BLEU (avg) | MT chrF (avg) | ASR WER |",
              "|---|---:|---:|---:|---:|---:|"]
    for arm, r in results.items():
        s = r.get("offline_greedy", {})
        lines.append(f"| {arm} | {r['steps']} | {r['train_wall_s']} | {s.get('bleu/mt_avg', '-')} | "
                     f"{s.get('chrf/mt_avg', '-')} | {s.get('wer/asr_avg', '-')} |")
    stats = conflict_table(results)
    if stats:
        lines += ["", "| arm | pair | module type | conflict share | mean cosine | norm removed | "
                      "conflict share, last quarter |", "|---|---|---|---:|---:|---:|---:|"]
        for (arm, pair, mtype), v in stats.items():
            cells = [v.get(stat, {}).get(which, "-") for stat, which in
                     (("conflict_share", "mean"), ("mean_cos", "mean"), ("norm_removed", "mean"),
                      ("conflict_share", "last_quarter"))]
            lines.append(f"| {arm} | {pair} | {mtype} | " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def conflict_table(results: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, dict[str, float]]]:
    """The logged ``mgcm/<primary>-<aux>/<statistic>[/<module type>]`` summaries by (arm, pair, module
    type; ``all`` for the whole model): {statistic: {mean, last_quarter, windows}}. A type that is the
    arm's only one (model level) is left out: it repeats ``all``."""
    table: dict[tuple[str, str, str], dict[str, dict[str, float]]] = {}
    for arm, r in results.items():
        for tag, v in r.get("conflicts", {}).items():
            _, pair, stat, *mtype = tag.split("/")
            table.setdefault((arm, pair, mtype[0] if mtype else "all"), {})[stat] = v
    for arm, pair in {(a, p) for a, p, _ in table}:
        types = [t for a, p, t in table if (a, p) == (arm, pair) and t != "all"]
        if len(types) == 1:
            del table[(arm, pair, types[0])]
    return dict(sorted(table.items(), key=lambda kv: (list(results).index(kv[0][0]), kv[0][1], kv[0][2] != "all",
                                                       kv[0][2])))


def plot(results: dict[str, Any], path: Path) -> None:
    """BLEU against AL and LAAL (mean over directions), one line per arm, points labelled by k."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, key in zip(axes, ("AL", "LAAL")):
        for i, (arm, r) in enumerate(results.items()):
            rows = [row for row in r["mean"] if key in row]
            xs, ys = [row[key] for row in rows], [row["BLEU"] for row in rows]
            ax.plot(xs, ys, marker="o", label=arm)
            if i == 0:  # the lags sit at nearly the same latency for every arm: labelled once
                for row, x, y in zip(rows, xs, ys):
                    ax.annotate("offline" if row["k"] == "offline" else f"k={row['k']}", (x, y), fontsize=7,
                                textcoords="offset points", xytext=(-8, -12 if row["k"] == "offline" else 4))
        ax.set_xlabel(f"{key} (ms)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("ST BLEU (mean over directions)")
    axes[0].legend()
    fig.suptitle("Simultaneous ST: quality against latency per training method")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
