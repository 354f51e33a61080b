"""The MGCM conflict plot: the series read from MGCM's logged windows, and the figure saved and logged
from a real Lightning run of a tiny SALM-T5 with MGCM on."""

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from nemo_emmett.mgcm.conflict_plot import ConflictPlot, conflict_series
from nemo_emmett.models.salm_t5 import SalmT5
from tests.mgcm.test_mgcm_step import Batches, st_asr_batch
from tests.parts.test_monitoring import check_png, events

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fit(model, batches, steps, root, callback):
    logger = TensorBoardLogger(save_dir=root, name="run", version=0)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=logger, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         log_every_n_steps=1, callbacks=[callback])
    trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader(Batches(batches), batch_size=None))
    return Path(logger.log_dir)


def test_series_per_pair_statistic_and_module_type():
    history = [(1, {"mgcm/st-asr/conflict_share": 0.5, "mgcm/st-asr/conflict_share/encoder": 0.25,
                    "mgcm/st-asr/mean_cos/encoder": -0.1, "mgcm/st-asr/norm_removed/encoder": 0.3}),
               (2, {"mgcm/st-asr/conflict_share/encoder": 0.75, "mgcm/st-mt/mean_cos/decoder": 0.2})]
    assert conflict_series(history) == {
        "st-asr": {"conflict_share": {"encoder": ([1, 2], [0.25, 0.75])}, "mean_cos": {"encoder": ([1], [-0.1])}},
        "st-mt": {"mean_cos": {"decoder": ([2], [0.2])}},
    }  # the all-module value and the statistics not drawn are left out


def test_the_conflict_plot_is_saved_and_logged_from_mgcms_windows(tiny_cfg, tmp_path):
    model = SalmT5({**tiny_cfg, "mgcm": {"enabled": True, "primary_task": "st", "log_every_n_steps": 1}})
    log_dir = fit(model, [st_asr_batch(model)], 3, tmp_path, ConflictPlot(every_n_steps=2))
    assert [step for step, _ in model.mgcm.history] == [1, 2, 3]  # one window per step, as logged
    types = set(conflict_series(model.mgcm.history)["st-asr"]["conflict_share"])
    assert len(types) >= 2, types  # module types side by side
    check_png(log_dir / "mgcm_conflicts.png")
    images = events(log_dir).Images("mgcm/conflicts")
    assert [i.step for i in images] == [2, 3]  # every 2 steps, and at fit end


def test_nothing_is_drawn_without_mgcm(tiny_cfg, tmp_path):
    model = SalmT5(tiny_cfg)
    log_dir = fit(model, [st_asr_batch(model)], 1, tmp_path, ConflictPlot())
    assert not (log_dir / "mgcm_conflicts.png").exists()
