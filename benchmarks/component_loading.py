"""Loading one task's components vs the whole modular model: parameters, bytes read, memory, and the
task's scores, from an export (``examples/export.py``); prints JSON.

    python benchmarks/component_loading.py --model m.emmett --shar-root shar --dataset multi30k_val

Each load runs in a fresh process (so its memory is its own): the whole model once, then every
task alone. ``rss_mib`` is the resident-memory growth of that process from just before to just
after the load (weights, tokenizer, allocator slack); ``parameter_mib`` the fp32 parameters built;
``read_mib`` the archive members read. With ``--shar-root``, every task translates
``<shar-root>/<dataset>/<task>_<src>-<tgt>`` with its components alone (BLEU/chrF, sacrebleu; that
these equal the whole model's outputs is tested in tests/models/test_component_files.py).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load_one(model: str, direction: str | None, shar: str | None, batch_size: int) -> dict:
    """In this process: load (one direction, or everything) and translate ``shar``."""
    import torch

    torch.set_num_threads(1)
    from nemo_emmett import inference
    from nemo_emmett.export import read_meta, restore_model

    before = rss_mib()
    m = restore_model(model, directions=None if direction is None else [direction])
    after = rss_mib()
    members = ["model_weights.pt", *(read_meta(model).get("components", {})[c] for c in m.component_modules())]
    with tarfile.open(model) as tar:
        read = sum(tar.getmember(n).size for n in members)
    out = {"direction": direction or "all", "components": sorted(m.component_modules()),
           "parameters": sum(p.numel() for p in m.parameters()),
           "parameter_mib": sum(p.numel() * p.element_size() for p in m.parameters()) / 2**20,
           "read_mib": read / 2**20, "rss_mib": after - before}
    if shar is not None:
        hyps, refs, keys = inference.translate_shar(m, shar, batch_size=batch_size, progress=False)
        scores = inference.score(hyps, refs, keys)
        out["scores"] = {k.split("/")[0]: round(v, 2) for k, v in scores.items()
                         if k.split("/")[0] in ("bleu", "chrf") and k != "bleu/avg"}
        out["signatures"] = inference.scores_record(scores, keys)["signatures"]
        out["hypotheses"] = hyps
    return out


def in_fresh_process(args: argparse.Namespace, direction: str | None, shar: str | None) -> dict:
    cmd = [sys.executable, __file__, "--model", args.model, "--one", direction or "all", "--batch-size",
           str(args.batch_size)] + (["--one-shar", shar] if shar else [])
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"loading {direction or 'all'} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="an export of a modular model (.emmett)")
    p.add_argument("--shar-root", help="root of the validation Shar folders to score each task on")
    p.add_argument("--dataset", default="multi30k_val", help="subfolder of --shar-root (default multi30k_val)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--one-shar", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one is not None:  # the child process
        print(json.dumps(load_one(args.model, None if args.one == "all" else args.one, args.one_shar, args.batch_size)))
        return 0
    from nemo_emmett.data.examples import direction_key
    from nemo_emmett.export import read_meta

    if not Path(args.model).is_file() or "components" not in read_meta(args.model):
        raise SystemExit(f"--model {args.model!r}: not an export of a modular model (no components in meta.json)")
    whole = in_fresh_process(args, None, None)
    import yaml

    with tarfile.open(args.model) as tar:
        tasks = yaml.safe_load(tar.extractfile("model_config.yaml").read())["modular"]["tasks"]
    rows = []
    for t in tasks:
        direction = direction_key(t["task"], t["source_lang"], t["target_lang"])
        shar = None
        if args.shar_root:
            shar = str(Path(args.shar_root) / args.dataset / f"{t['task']}_{t['source_lang']}-{t['target_lang']}")
        row = in_fresh_process(args, direction, shar)
        row.pop("hypotheses", None)
        rows.append(row)
    for key in ("parameter_mib", "read_mib", "rss_mib"):
        whole[f"{key}_per_task_mean"] = sum(r[key] for r in rows) / len(rows)
    print(json.dumps({"whole": whole, "tasks": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
