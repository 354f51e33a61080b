"""Train a nemo_emmett model with Hydra.

    python examples/train.py --config-name salm_t5 [overrides]

Until the SALM-T5 model lands, this builds the data pipeline from ``cfg.data`` (the demo corpus
by default), draws ``cfg.data_check.num_batches`` training batches and prints the bucket and mix
summary; then it runs one validation pass to check that every held-out example arrives once.
"""

from __future__ import annotations

import itertools
import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain clone, too

from nemo_emmett.data.datamodule import EmmettDataModule  # noqa: E402
from nemo_emmett.data.report import format_summary, summarize_batches  # noqa: E402

log = logging.getLogger("nemo_emmett.train")


@hydra.main(config_path="../conf", config_name="salm_t5", version_base="1.3")
def main(cfg: DictConfig) -> None:
    dm = EmmettDataModule(cfg.data)
    dm.setup("fit")
    print(dm.plan.summary())

    sampler = dm.train_dataset().sampler_for_slot(0, 1)
    batches = list(itertools.islice(iter(sampler), cfg.data_check.num_batches))
    weights = dict(zip(sampler.mux.names, dm.plan.weights))
    print(format_summary(summarize_batches(batches), sampler.mux.shares(), weights, sampler.stats.as_dict()))

    seen = [i for b in dm.val_dataloader() for i in b["ids"]]
    expected = sum(s.num_examples for s in dm.plan.validation)
    print(f"Validation pass: {len(seen)} examples ({len(set(seen))} distinct) of {expected} "
          f"with num_workers={dm.cfg.num_workers}")
    if len(seen) != expected or len(set(seen)) != expected:
        raise RuntimeError("validation pass lost or duplicated examples")


if __name__ == "__main__":
    main()
