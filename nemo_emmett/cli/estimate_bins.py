"""Estimate 2D buckets from the training data of a config; print them, plot them, save them.

    python examples/estimate_bins.py --config-name salm_t5 --out bins/ [hydra overrides...]
    python examples/estimate_bins.py --config-name salm_t5 --out bins/ data.text_buckets.num_input_bins=8

Writes ``<out>/buckets.json`` (bins and batch sizes per modality; pass it as
``data.audio_buckets.bucket_file`` / ``data.text_buckets.bucket_file``) and ``<out>/<modality>_bins.png``:
the 2D length distribution with the bins drawn, each with its example count and batch size.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nemo_emmett.cli.paths import compose_from_args, config_parser
from nemo_emmett.data.bin_plot import draw_buckets
from nemo_emmett.data.sampler import ModalityBuckets
from nemo_emmett.parts.figures import pyplot
from nemo_emmett.startup import resolve_run


def plot_bins(lengths: np.ndarray, mb: ModalityBuckets, modality: str, out: Path) -> None:
    """One modality's bin plot (``data/bin_plot.py``) as a PNG."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 6))
    image = draw_buckets(ax, lengths, mb, modality=modality)
    if image is not None:
        fig.colorbar(image, ax=ax, label="examples per histogram cell")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = config_parser(__doc__, overrides_example="data.text_buckets.num_input_bins=8")
    p.add_argument("--out", required=True, help="output folder for buckets.json and the plots")
    args = p.parse_args(argv)

    cfg = compose_from_args(args)
    plan = resolve_run(cfg).data_module().plan
    lengths = plan.lengths

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {}
    for modality, mb in plan.buckets.items():
        result[modality] = {"bins": [list(b) for b in mb.grid.bins], "batch_sizes": mb.batch_sizes}
        est = plan.estimates.get(modality)
        print(f"{modality}: {len(mb.grid)} buckets from {len(lengths[modality])} examples"
              + (f", {est.num_outliers} outliers left out" if est else " (bins from config)"))
        for k, ((i, o), bs) in enumerate(zip(mb.grid.bins, mb.batch_sizes)):
            print(f"  {k:>3}: max_input {i:8.1f}  max_output {o:6.1f}  batch_size {bs}")
        png = out / f"{modality}_bins.png"
        plot_bins(lengths.get(modality, np.zeros((0, 2))), mb, modality, png)
        print(f"  plot: {png}")
    (out / "buckets.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {out / 'buckets.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
