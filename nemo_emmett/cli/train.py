"""Train a nemo_emmett model with Hydra, Lightning and NeMo's exp_manager.

    emmett-train --config-name salm_t5 [overrides]          # or: python examples/train.py ...
    emmett-train --config-name salm_t5 trainer.max_steps=2000 data.size_temperature=2.0
    emmett-train --config-name salm_t5 -m model.label_smoothing=0.0,0.1   # sweep

Re-running the same command resumes from the experiment's last checkpoint (weights, optimizer,
and the data stream where it stopped). Configs come from the package's ``nemo_emmett/conf/`` (shipped in
the wheel), or ``$NEMO_EMMETT_CONF``; ``--config-path`` points elsewhere.
"""

from __future__ import annotations

from nemo.core.config import hydra_runner
from omegaconf import DictConfig

from nemo_emmett.cli.paths import conf_path
from nemo_emmett.config_store import register_configs
from nemo_emmett.training import train

# Absolute, so that Hydra finds it whichever file calls main() (the console script or examples/train.py);
# unchecked here, so that a missing folder is Hydra's error naming it, not an import error.
CONF = str(conf_path())


@hydra_runner(config_path=CONF, config_name="salm_t5")
def hydra_main(cfg: DictConfig) -> None:
    train(cfg)


def main() -> None:
    register_configs()  # the typed schemas nemo_emmett/conf/*.yaml start from (their defaults: [schema: ...])
    hydra_main()


if __name__ == "__main__":
    main()
