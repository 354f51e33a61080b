"""Size every bucket's batch for a config's model and memory budget, and write the bucket file.

    python examples/oomptimize.py --config-name salm_t5 --out buckets.json oomptimizer.memory_budget=2GiB
    python examples/oomptimize.py --config-name salm_t5 --out buckets.json trainer.precision=bf16-mixed

The same search the ``oomptimizer`` callback runs before ``fit`` (and the same cache): each probe
is a real training step of the config's model on a synthetic worst-case batch of the bucket.
Train with the result::

    python examples/train.py --config-name salm_t5 data.audio_buckets.bucket_file=buckets.json \\
        data.text_buckets.bucket_file=buckets.json
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from omegaconf import OmegaConf

from nemo_emmett.cli.paths import compose_from_args, config_parser
from nemo_emmett.oomptimizer.cache import save_json
from nemo_emmett.oomptimizer.callback import OOMptimizer
from nemo_emmett.oomptimizer.measure import measure_for_trainer
from nemo_emmett.training import trainer_kwargs


def main(argv: list[str] | None = None) -> int:
    p = config_parser(__doc__, overrides_example="oomptimizer.memory_budget=2GiB")
    p.add_argument("--out", required=True, help="bucket file to write (JSON: bins and batch sizes per modality)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import lightning.pytorch as pl

    from nemo_emmett.startup import build_data_and_model

    cfg = compose_from_args(args)
    # the training run's strategy and precision (plugins included); its YAML callbacks do not measure anything
    trainer_cfg = {**trainer_kwargs(cfg.trainer), "logger": False, "enable_checkpointing": False, "callbacks": []}
    pl.seed_everything(cfg.seed, workers=False)
    trainer = pl.Trainer(**trainer_cfg)
    data, model = build_data_and_model(cfg)
    model = trainer.precision_plugin.convert_module(model).to(trainer.strategy.root_device)
    block = cfg.get("oomptimizer")
    oomptimizer = OOMptimizer(OmegaConf.to_container(block, resolve=True) if block is not None else None)
    result = measure_for_trainer(trainer, data, model, oomptimizer.cfg)
    save_json(Path(args.out), result.bucket_file())
    print(result.table())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
