"""The Markdown tables of recipes/mammoth_multi30k.sh from its per-setup JSON (benchmarks/component_loading.py).

    python recipes/mammoth_table.py outputs/mammoth_multi30k specific partial shared
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def tables(root: Path, setups: list[str]) -> str:
    runs = {s: json.loads((root / f"{s}.json").read_text()) for s in setups}
    directions = [t["direction"] for t in runs[setups[0]]["tasks"]]
    head = "| direction | " + " | ".join(f"{s} BLEU / chrF" for s in setups) + " |"
    lines = [head, "|---|" + "---|" * len(setups)]
    for i, d in enumerate(directions):
        cells = [f"{runs[s]['tasks'][i]['scores']['bleu']:.1f} / {runs[s]['tasks'][i]['scores']['chrf']:.1f}"
                 for s in setups]
        lines.append(f"| {d.removeprefix('mt:')} | " + " | ".join(cells) + " |")
    signatures = sorted({json.dumps(t["signatures"], sort_keys=True) for s in setups for t in runs[s]["tasks"]
                         if "signatures" in t})
    means = [sum(t["scores"][k] for t in runs[s]["tasks"]) / len(directions) for s in setups for k in ("bleu", "chrf")]
    lines.append("| **mean** | " + " | ".join(f"**{means[2 * i]:.2f} / {means[2 * i + 1]:.1f}**"
                                             for i in range(len(setups))) + " |")
    for sig in signatures or [None]:  # the scores' sacrebleu signatures, under the table they belong to
        if sig is None:
            lines.append("\nsacrebleu signatures: not recorded (JSON written before they were)")
        else:
            sig = json.loads(sig)
            lines.append(f"\nBLEU signature `{sig['bleu']}`, chrF signature `{sig['chrf']}`")
    lines += ["", "| setup | components | parameters (whole model) | parameters per task | per task / whole | "
              "MiB read for one task (whole) | RSS growth for one task, mean (whole) |", "|---|---|---|---|---|---|---|"]
    for s in setups:
        w, ts = runs[s]["whole"], runs[s]["tasks"]
        per = ts[0]["parameters"]
        lines.append(f"| {s} | {len(w['components'])} | {w['parameters']:,} | {per:,} | {per / w['parameters']:.0%} | "
                     f"{w['read_mib_per_task_mean']:.1f} ({w['read_mib']:.1f}) | "
                     f"{w['rss_mib_per_task_mean']:.1f} MiB ({w['rss_mib']:.1f} MiB) |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(tables(Path(sys.argv[1]), sys.argv[2:] or ["specific", "partial", "shared"]))
