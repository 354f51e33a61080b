"""The Trainer from YAML (``training.trainer_kwargs``): NeMo's ``resolve_trainer_cfg`` builds ``_target_``
strategies and callbacks, the recipe's own callbacks stay first, and plain DDP detects unused parameters."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import OmegaConf

from nemo_emmett.data.stats import DataStreamStats
from nemo_emmett.training import trainer_kwargs

YAML = """
accelerator: cpu
devices: 1
max_steps: 3
logger: false
enable_checkpointing: false
strategy: {_target_: lightning.pytorch.strategies.DDPStrategy, gradient_as_bucket_view: true}
callbacks:
  - {_target_: lightning.pytorch.callbacks.EarlyStopping, monitor: val_loss, patience: 2}
  - {_target_: lightning.pytorch.callbacks.LearningRateMonitor, logging_interval: step}
"""


def test_yaml_callbacks_and_strategy_objects_join_the_recipes_own():
    ours = DataStreamStats()
    kwargs = trainer_kwargs(OmegaConf.create(YAML), [ours])
    first, early, lr = kwargs["callbacks"]
    assert first is ours and isinstance(early, EarlyStopping) and isinstance(lr, LearningRateMonitor)
    assert (early.monitor, early.patience) == ("val_loss", 2)
    strategy = kwargs["strategy"]
    assert isinstance(strategy, DDPStrategy)
    # our DDP rule holds for a block too: unused-parameter detection unless the block says otherwise
    assert strategy._ddp_kwargs == {"gradient_as_bucket_view": True, "find_unused_parameters": True}
    trainer = pl.Trainer(**kwargs, enable_progress_bar=False)
    assert trainer.callbacks.count(ours) == 1 and any(isinstance(c, EarlyStopping) for c in trainer.callbacks)


def test_a_ddp_block_that_sets_find_unused_parameters_keeps_it_and_names_still_map():
    cfg = {"strategy": {"_target_": "lightning.pytorch.strategies.DDPStrategy", "find_unused_parameters": False}}
    assert trainer_kwargs(cfg)["strategy"]._ddp_kwargs == {"find_unused_parameters": False}
    kwargs = trainer_kwargs({"strategy": "ddp", "devices": 2})
    assert kwargs == {"strategy": "ddp_find_unused_parameters_true", "devices": 2, "callbacks": []}


def test_callbacks_compose_from_the_command_line(tmp_path):
    from nemo_emmett.cli.paths import conf_dir
    from nemo_emmett.config_store import compose_config

    cfg = compose_config("salm_t5", ["+trainer.callbacks=[{_target_: lightning.pytorch.callbacks.EarlyStopping,"
                                     " monitor: val_loss}]"], config_dir=conf_dir())
    (early,) = trainer_kwargs(cfg.trainer)["callbacks"]
    assert isinstance(early, EarlyStopping) and early.monitor == "val_loss"


@pytest.mark.parametrize(("callbacks", "message"), [
    ({"_target_": "lightning.pytorch.callbacks.EarlyStopping", "monitor": "val_loss"}, "must be a list of _target_"),
    ([{"monitor": "val_loss"}], "must be a list of _target_ blocks"),
    ([{"_target_": "builtins.print"}], "trainer.strategy or trainer.callbacks: .*'builtins.print' is blocked"),
])
def test_bad_callbacks_are_errors_naming_the_key(callbacks, message):
    with pytest.raises(ValueError, match=message):
        trainer_kwargs({"callbacks": callbacks})
