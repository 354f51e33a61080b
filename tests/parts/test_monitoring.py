"""What a run shows in TensorBoard: the learning rate, the data-stream scalars (realised source shares,
batches per bucket, padding) and the bin plot, from one tiny Lightning run on the infinite stream."""

from pathlib import Path

import lightning.pytorch as pl
import pytest
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image

from nemo_emmett.data.bin_plot import BinPlot
from nemo_emmett.data.datamodule import EmmettDataModule
from nemo_emmett.data.stats import DataStreamStats
from nemo_emmett.parts.monitoring import LoggedLearningRateMonitor, MonitoringConfig
from tests.conftest import WordLengthIds
from tests.data.test_datamodule import data_cfg
from tests.parts.test_progress_bar import Scalar

STEPS = 6


def events(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def check_png(path, min_size=(400, 300)):
    """A valid PNG of at least ``min_size`` pixels with more than a handful of colours (something drawn)."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.size[0] >= min_size[0] and im.size[1] >= min_size[1], im.size
        assert len(im.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50


@pytest.fixture
def logged_run(tmp_path, text_sources, monkeypatch):
    monkeypatch.setenv("NEMO_EMMETT_CACHE", str(tmp_path / "cache"))
    dm = EmmettDataModule(data_cfg(tmp_path, text_sources, num_workers=0), text=WordLengthIds())
    logger = TensorBoardLogger(save_dir=tmp_path, name="run", version=0)
    trainer = pl.Trainer(max_steps=STEPS, accelerator="cpu", logger=logger, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         log_every_n_steps=1, callbacks=[DataStreamStats(every_n_steps=1), LoggedLearningRateMonitor(),
                                                         BinPlot()])
    trainer.fit(Scalar(), datamodule=dm)
    return dm, logger, events(logger.log_dir)


def last(acc, tag):
    return acc.Scalars(tag)[-1].value


def test_the_learning_rate_is_logged(logged_run):
    _, _, acc = logged_run
    lrs = acc.Scalars("lr-SGD")
    assert len(lrs) >= STEPS - 1 and all(e.value == pytest.approx(0.01) for e in lrs)


def test_source_shares_bucket_counts_and_padding_are_logged(logged_run):
    dm, _, acc = logged_run
    weights = dict(zip((s.name for s in dm.plan.train), dm.plan.weights))
    shares = {n: last(acc, f"data/share_{n}") for n in weights}
    assert sum(shares.values()) == pytest.approx(1.0)
    assert all(abs(shares[n] - w) < 0.15 for n, w in weights.items()), (shares, weights)
    buckets = [t for t in acc.Tags()["scalars"] if t.startswith("data/batches_text_bucket")]
    assert buckets and sum(last(acc, t) for t in buckets) == STEPS  # every consumed batch, in its bucket
    for side in ("input", "output"):
        values = [e.value for e in acc.Scalars(f"data/padding_text_{side}")]
        assert len(values) >= STEPS - 1 and all(0.0 <= v < 1.0 for v in values)
        assert any(v > 0 for v in values)  # examples of different lengths share a batch


def test_the_bin_plot_is_saved_and_logged_as_a_figure(logged_run):
    dm, logger, acc = logged_run
    check_png(Path(logger.log_dir) / "bin_plot.png")
    assert "data/bin_plot" in acc.Tags()["images"]
    image = acc.Images("data/bin_plot")[0]
    assert image.width >= 400 and image.height >= 300


def test_no_logger_no_learning_rate_and_no_error(tmp_path, text_sources, monkeypatch):
    monkeypatch.setenv("NEMO_EMMETT_CACHE", str(tmp_path / "cache"))
    dm = EmmettDataModule(data_cfg(tmp_path, text_sources, num_workers=0), text=WordLengthIds())
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         callbacks=[LoggedLearningRateMonitor()], default_root_dir=tmp_path)
    trainer.fit(Scalar(), datamodule=dm)  # Lightning's LearningRateMonitor raises here
    assert trainer.global_step == 2


def test_monitoring_config_rejects_nonsense():
    with pytest.raises(ValueError, match="data_stats_every_n_steps"):
        MonitoringConfig(data_stats_every_n_steps=-1)
    with pytest.raises(ValueError, match="conflict_plot_every_n_steps"):
        MonitoringConfig(conflict_plot_every_n_steps=0)


def test_the_run_adds_them_by_default_and_the_config_turns_each_off():
    from nemo_emmett.config_store import compose_config
    from nemo_emmett.mgcm.conflict_plot import ConflictPlot
    from nemo_emmett.oomptimizer.callback import OOMptimizer
    from nemo_emmett.parts.progress_bar import StepProgressBar
    from nemo_emmett.training import build_callbacks
    from tests.test_configs import CONF

    def kinds(*overrides):
        cfg = compose_config("salm_t5", ["threads.mode=fixed", *overrides], config_dir=CONF)
        return [type(c) for c in build_callbacks(cfg)]

    assert kinds() == [DataStreamStats, StepProgressBar, LoggedLearningRateMonitor, BinPlot, ConflictPlot]
    assert kinds("oomptimizer.enabled=true").index(OOMptimizer) < kinds("oomptimizer.enabled=true").index(BinPlot)
    assert kinds("monitoring.progress_bar=false", "monitoring.learning_rate=false", "monitoring.bin_plot=false",
                 "monitoring.conflict_plot=false") == [DataStreamStats]
    assert StepProgressBar not in kinds("+trainer.enable_progress_bar=false")  # Lightning refuses a bar then
