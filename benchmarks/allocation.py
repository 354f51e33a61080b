#!/usr/bin/env python
"""Task allocation over ``nodes x gpus_per_node``: greedy vs local search vs random, and component sync vs DDP.

    python benchmarks/allocation.py --out results/allocation      # table, plot and JSON in that folder
    python benchmarks/allocation.py --quick --out /tmp/alloc      # fewer iterations and languages (the test)

A pure simulation (no training): the cost model of ``nemo_emmett/mammoth/meta/allocation_cost.py``
(ring all-reduce bytes per step, inter-node links weighted ``--inter-node`` times intra-node ones,
averaged over the curriculum) on two setups:

* ``multi30k``: the 12 directions among en, de, fr, cs with ``recipes/mammoth_multi30k.meta.yaml``'s
  sharing (encoder ``[SRC_LANGUAGE, FULL]``, decoder ``[FULL, TGT_LANGUAGE]``, one shared embedding;
  d_model 192, d_ff 512, vocabulary 4,000), uniform weights, on 2 nodes x 4 GPUs;
* ``synthetic``: ``N`` languages, English plus ``N - 1`` others, each to and from English (``2 (N - 1)``
  tasks), encoder ``[3 x SRC_LANGUAGE, 3 x FULL]``, decoder ``[3 x FULL, 3 x TGT_LANGUAGE]``, a shared
  embedding (d_model 512, d_ff 2048, vocabulary 32,000), corpus sizes Zipf-distributed (``1e7 / rank``)
  with temperature-5 weights, the tasks of the smallest 10% of languages joining at step 20,000 of
  100,000; on 8 nodes x 8 GPUs.

Methods: ``greedy`` (``allocate_devices``, node-blind), ``search`` (``allocate``: greedy then local
search, seed 0), ``random`` (greedy's task copies shuffled and dealt round-robin; mean of ``--seeds``
seeds). Then, for the synthetic setup with 4 ... 100 languages: the bytes each rank sends per step in
the component sync of the searched allocation (every task started) against plain DDP (every rank
all-reduces the whole model: ``2 (W - 1) / W x model bytes``).

Writes ``allocation.md`` (tables), ``allocation.png`` (plot) and ``allocation.json`` to ``--out``;
the last line printed is the JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nemo_emmett.data.sources import temperature_weights  # noqa: E402
from nemo_emmett.mammoth.meta.allocation import allocate  # noqa: E402
from nemo_emmett.mammoth.meta.allocation_cost import (  # noqa: E402
    LinkWeights,
    Topology,
    communication_cost,
    component_bytes,
    ddp_bytes_per_rank,
    device_loads,
    sync_bytes_per_rank,
    task_starts,
)
from nemo_emmett.mammoth.meta.allocation_search import random_allocation  # noqa: E402
from nemo_emmett.mammoth.meta.schema import AllocationSpec  # noqa: E402
from nemo_emmett.mammoth.sharing import single_component, stack_component  # noqa: E402
from nemo_emmett.mammoth.tasks import ModularTaskConfig  # noqa: E402

GB = 1e9


def make_task(src: str, tgt: str, encoder: list[str], decoder: list[str]) -> ModularTaskConfig:
    kw = {"source_lang": src, "target_lang": tgt}
    return ModularTaskConfig(
        name=f"mt_{src}-{tgt}", source_lang=src, target_lang=tgt,
        encoder=[stack_component("encoder", i, p, **kw) for i, p in enumerate(encoder)],
        decoder=[stack_component("decoder", i, p, **kw) for i, p in enumerate(decoder)],
        source_embed=single_component("embed", "FULL", side="encoder", **kw),
        target_embed=single_component("embed", "FULL", side="decoder", **kw))


def multi30k() -> dict[str, Any]:
    langs = ["en", "de", "fr", "cs"]
    tasks = [make_task(s, t, ["SRC_LANGUAGE", "FULL"], ["FULL", "TGT_LANGUAGE"]) for s in langs for t in langs if s != t]
    sizes = component_bytes(_names(tasks), encoder_layers=[1, 1], decoder_layers=[1, 1], d_model=192, d_ff=512,
                            vocab_size=4000)
    return {"tasks": tasks, "weights": {t.name: 1 / len(tasks) for t in tasks}, "curriculum": {}, "sizes": sizes,
            "topology": Topology(2, 4), "steps": None}


def synthetic(num_languages: int, nodes: int = 8, gpus_per_node: int = 8) -> dict[str, Any]:
    others = [f"x{i:03d}" for i in range(1, num_languages)]
    tasks = [make_task(*pair, ["SRC_LANGUAGE", "FULL"], ["FULL", "TGT_LANGUAGE"])
             for x in others for pair in (("en", x), (x, "en"))]
    corpus = {x: int(1e7 / rank) for rank, x in enumerate(others, start=1)}
    examples = [corpus[t.target_lang if t.source_lang == "en" else t.source_lang] for t in tasks]
    weights = dict(zip([t.name for t in tasks], temperature_weights(examples, 5.0)))
    late = set(others[len(others) - max(1, len(others) // 10):]) if len(others) > 1 else set()
    curriculum = {t.name: 20_000 for t in tasks if {t.source_lang, t.target_lang} & late}
    sizes = component_bytes(_names(tasks), encoder_layers=[3, 3], decoder_layers=[3, 3], d_model=512, d_ff=2048,
                            vocab_size=32_000)
    return {"tasks": tasks, "weights": weights, "curriculum": curriculum, "sizes": sizes,
            "topology": Topology(nodes, gpus_per_node), "steps": 100_000}


def _names(tasks: list[ModularTaskConfig]) -> list[str]:
    return list(dict.fromkeys(c for t in tasks for c in t.components()))


def compare(setup: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """greedy, search and random on one setup: bytes per step across and within nodes, load."""
    spec = AllocationSpec(inter_node=args.inter_node, iterations=args.iterations, seed=0, steps=setup["steps"])
    t0 = time.perf_counter()
    result = allocate(setup["tasks"], setup["weights"], setup["topology"], sizes=setup["sizes"],
                      curriculum=setup["curriculum"], spec=spec)
    search_s = time.perf_counter() - t0
    components = {t.name: t.components() for t in setup["tasks"]}
    starts = task_starts(setup["weights"], setup["curriculum"])
    horizon = setup["steps"] or 1
    links = LinkWeights(spec.intra_node, spec.inter_node)
    world = setup["topology"].size

    def figures(devices: list[list[str]]) -> dict[str, float]:
        c = communication_cost(devices, components, setup["sizes"], starts, horizon, setup["topology"], links)
        return {"inter_gb": c.inter_bytes / GB, "intra_gb": c.intra_bytes / GB, "weighted_gb": c.weighted / GB,
                "max_load_over_mean": max(device_loads(devices, setup["weights"], starts, horizon)) * world,
                "idle_at_step_0": sum(all(starts[n] != 0 for n in names) for names in devices)}

    items = [n for names in result.greedy for n in names]
    randoms = [figures(random_allocation(setup["topology"].size, items, seed)) for seed in range(args.seeds)]
    return {"tasks": len(setup["tasks"]), "devices": world, "nodes": setup["topology"].nodes,
            "delayed_tasks": len(setup["curriculum"]), "components": len(setup["sizes"]),
            "greedy": figures(result.greedy), "search": {**figures(result.devices), "seconds": search_s},
            "random": {k: statistics.mean(r[k] for r in randoms) for k in randoms[0]}}


def scaling(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Bytes per rank per step: component sync of the searched allocation vs DDP, as languages grow."""
    rows = []
    for n in args.languages:
        setup = synthetic(n)
        spec = AllocationSpec(inter_node=args.inter_node, iterations=args.iterations, seed=0, steps=setup["steps"])
        result = allocate(setup["tasks"], setup["weights"], setup["topology"], sizes=setup["sizes"],
                          curriculum=setup["curriculum"], spec=spec)
        per_rank = sync_bytes_per_rank(result.devices, {t.name: t.components() for t in setup["tasks"]},
                                       setup["sizes"])
        model = sum(setup["sizes"].values())
        ddp = ddp_bytes_per_rank(model, setup["topology"].size)
        rows.append({"languages": n, "tasks": len(setup["tasks"]), "model_gb": model / GB,
                     "sync_mean_gb": statistics.mean(per_rank) / GB, "sync_max_gb": max(per_rank) / GB,
                     "ddp_gb": ddp / GB, "sync_mean_over_ddp": statistics.mean(per_rank) / ddp})
    return rows


def markdown(out: dict[str, Any]) -> str:
    lines = []
    for name, r in out["setups"].items():
        lines += [f"**{name}**: {r['tasks']} tasks ({r['delayed_tasks']} delayed), {r['components']} components, "
                  f"{r['nodes']} nodes x {r['devices'] // r['nodes']} GPUs (search: {r['search']['seconds']:.1f} s)", "",
                  "| method | inter-node GB/step | intra-node GB/step | weighted GB/step | max load / mean "
                  "| ranks idle at step 0 |", "|---|---|---|---|---|---|"]
        for m in ("greedy", "search", "random"):
            f = r[m]
            label = f"random (mean of {out['config']['seeds']})" if m == "random" else m
            lines.append(f"| {label} | {f['inter_gb']:.3f} | {f['intra_gb']:.3f} | {f['weighted_gb']:.3f} "
                         f"| {f['max_load_over_mean']:.2f} | {f['idle_at_step_0']:g} |")
        lines.append("")
    lines += ["| languages | tasks | model GB | component sync GB/rank (mean / max) | DDP GB/rank | sync / DDP |",
              "|---|---|---|---|---|---|"]
    for r in out["scaling"]:
        lines.append(f"| {r['languages']} | {r['tasks']} | {r['model_gb']:.2f} | {r['sync_mean_gb']:.3f} / "
                     f"{r['sync_max_gb']:.3f} | {r['ddp_gb']:.3f} | {r['sync_mean_over_ddp']:.3f} |")
    return "\n".join(lines) + "\n"


def plot(out: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, (name, r) in zip(axes[:2], out["setups"].items()):
        methods = ["greedy", "search", "random"]
        xs = range(len(methods))
        ax.bar([x - 0.2 for x in xs], [r[m]["inter_gb"] for m in methods], 0.4, label="inter-node")
        ax.bar([x + 0.2 for x in xs], [r[m]["intra_gb"] for m in methods], 0.4, label="intra-node")
        ax.set_xticks(list(xs), methods)
        ax.set_ylabel("GB per step (all ranks)")
        ax.set_title(f"{name}: {r['tasks']} tasks, {r['nodes']}x{r['devices'] // r['nodes']} GPUs")
        ax.legend()
    ax = axes[2]
    langs = [r["languages"] for r in out["scaling"]]
    ax.plot(langs, [r["ddp_gb"] for r in out["scaling"]], "o-", label="DDP (whole model)")
    ax.plot(langs, [r["sync_max_gb"] for r in out["scaling"]], "s--", label="component sync, max rank")
    ax.plot(langs, [r["sync_mean_gb"] for r in out["scaling"]], "s-", label="component sync, mean rank")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("languages (to/from English), 8x8 GPUs")
    ax.set_ylabel("GB sent per rank per step")
    ax.set_title("bytes per rank as languages grow")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder for allocation.md, .png and .json")
    p.add_argument("--iterations", type=int, default=AllocationSpec.iterations, help="local search proposals")
    p.add_argument("--seeds", type=int, default=5, help="random allocations averaged")
    p.add_argument("--inter-node", type=float, default=LinkWeights.inter_node, help="cost of an inter-node byte")
    p.add_argument("--languages", type=int, nargs="+", default=[4, 8, 16, 32, 64, 100])
    p.add_argument("--synthetic-languages", type=int, default=100)
    p.add_argument("--quick", action="store_true", help="2,000 iterations, 2 seeds, 4/8/16 languages, 16 for synthetic")
    args = p.parse_args(argv)
    if args.quick:
        args.iterations, args.seeds, args.languages, args.synthetic_languages = 2000, 2, [4, 8, 16], 16
    t0 = time.perf_counter()
    out: dict[str, Any] = {"benchmark": "allocation",
                           "config": {"iterations": args.iterations, "seeds": args.seeds, "inter_node": args.inter_node,
                                      "languages": args.languages, "quick": args.quick,
                                      "synthetic_languages": args.synthetic_languages},
                           "setups": {"multi30k": compare(multi30k(), args),
                                      f"synthetic_{args.synthetic_languages}": compare(
                                          synthetic(args.synthetic_languages), args)},
                           "scaling": scaling(args)}
    out["config"]["seconds"] = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "allocation.md").write_text(markdown(out))
    plot(out, args.out / "allocation.png")
    text = json.dumps(out)
    (args.out / "allocation.json").write_text(text + "\n")
    print(markdown(out))
    print(text)
    return out


if __name__ == "__main__":
    main()
