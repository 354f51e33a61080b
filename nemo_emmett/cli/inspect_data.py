"""Check the data pipeline of a config without training: sources and weights, the 2D buckets with
their batch sizes, the realised mix and padding over N training batches, and one validation pass
that must deliver every held-out example exactly once.

    python examples/inspect_data.py --config-name salm_t5 [--num-batches 300] [hydra overrides...]
"""

from __future__ import annotations

import itertools
import sys

from nemo_emmett.cli.paths import compose_from_args, config_parser
from nemo_emmett.data.fusion import ZipSampler
from nemo_emmett.data.report import format_summary, summarize_batches
from nemo_emmett.startup import resolve_run


def main(argv: list[str] | None = None) -> int:
    p = config_parser(__doc__, overrides_example="data.size_temperature=2.0")
    p.add_argument("--num-batches", type=int, default=300, help="training batches to draw for the summary")
    args = p.parse_args(argv)
    cfg = compose_from_args(args)

    dm = resolve_run(cfg).data_module()
    print(dm.plan.summary())
    sampler = dm.train_dataset().sampler_for_slot(0, 1)
    steps = list(itertools.islice(iter(sampler), args.num_batches))
    if isinstance(sampler, ZipSampler):  # data.fusion=zip: one multiplexer per modality, weights within it
        batches = [b for pair in steps for b in pair]
        shares = {n: v for s in sampler.samplers.values() for n, v in s.mux.shares().items()}
        per_modality = {m: sum(w for s, w in zip(dm.plan.train, dm.plan.weights) if s.modality == m)
                        for m in sampler.samplers}
        weights = {s.name: w / per_modality[s.modality] for s, w in zip(dm.plan.train, dm.plan.weights)}
        stats = {m: s.stats.as_dict() for m, s in sampler.samplers.items()}
    else:
        batches, shares, stats = steps, sampler.mux.shares(), sampler.stats.as_dict()
        weights = dict(zip(sampler.mux.names, dm.plan.weights))
    print(format_summary(summarize_batches(batches), shares, weights, stats))

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
