"""Check the data pipeline of a config without training: sources and weights, the 2D buckets with
their batch sizes, the realised mix and padding over N training batches, and one validation pass
that must deliver every held-out example exactly once.

    python examples/inspect_data.py --config-name salm_t5 [--num-batches 300] [hydra overrides...]
"""

from __future__ import annotations

import argparse
import itertools
import sys

from nemo_emmett.cli.paths import conf_dir
from nemo_emmett.config_store import compose_config
from nemo_emmett.data.report import format_summary, summarize_batches
from nemo_emmett.startup import resolve_run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-name", default="salm_t5")
    p.add_argument("--config-dir", default=None, help="Hydra config folder (default: the clone's conf/)")
    p.add_argument("--num-batches", type=int, default=300, help="training batches to draw for the summary")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data.temperature=2.0")
    args = p.parse_args(argv)
    cfg = compose_config(args.config_name, args.overrides, config_dir=args.config_dir or conf_dir())

    dm = resolve_run(cfg).data_module()
    print(dm.plan.summary())
    sampler = dm.train_dataset().sampler_for_slot(0, 1)
    batches = list(itertools.islice(iter(sampler), args.num_batches))
    weights = dict(zip(sampler.mux.names, dm.plan.weights))
    print(format_summary(summarize_batches(batches), sampler.mux.shares(), weights, sampler.stats.as_dict()))

    seen = [i for b in dm.val_dataloader() for i in b.ids]
    expected = sum(s.num_examples for s in dm.plan.validation)
    print(f"Validation pass: {len(seen)} examples ({len(set(seen))} distinct) of {expected} "
          f"with num_workers={dm.cfg.num_workers}")
    if len(seen) != expected or len(set(seen)) != expected:
        print("error: the validation pass lost or duplicated examples", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
