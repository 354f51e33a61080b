"""Train a nemo_emmett model with Hydra, Lightning and NeMo's exp_manager.

    python examples/train.py --config-name salm_t5 [overrides]
    python examples/train.py --config-name salm_t5 trainer.max_steps=2000 data.temperature=2.0
    python examples/train.py --config-name salm_t5 -m model.label_smoothing=0.0,0.1   # sweep

Re-running the same command resumes from the experiment's last checkpoint (weights, optimizer,
and the data stream where it stopped).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain clone, too

from nemo.core.config import hydra_runner  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from nemo_emmett.config_store import register_configs  # noqa: E402
from nemo_emmett.training import train  # noqa: E402


@hydra_runner(config_path="../conf", config_name="salm_t5")
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    register_configs()  # the typed schemas conf/*.yaml start from (their defaults: [schema: ...])
    main()
