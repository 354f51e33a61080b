"""The training bar counts optimizer steps to ``max_steps`` (from the resumed step on a resumed run), the
validation bar counts examples to the plan's total: real Lightning runs on the infinite training stream."""

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from nemo_emmett.data.datamodule import EmmettDataModule
from nemo_emmett.parts.progress_bar import StepProgressBar
from tests.conftest import WordLengthIds
from tests.data.test_datamodule import data_cfg


class Scalar(pl.LightningModule):
    """Trains one scalar; validation counts the examples it is given."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.val_examples = 0

    def training_step(self, batch, batch_idx):
        return (self.w * batch.target_ids.float().mean()).sum()

    def validation_step(self, batch, batch_idx):
        self.val_examples += len(batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(dm, root, max_steps, *, ckpt_path=None, val_check_interval=None):
    bar = StepProgressBar()
    trainer = pl.Trainer(max_steps=max_steps, accelerator="cpu", logger=False, enable_model_summary=False,
                         default_root_dir=root, num_sanity_val_steps=0,
                         limit_val_batches=1.0 if val_check_interval else 0, val_check_interval=val_check_interval,
                         check_val_every_n_epoch=None,
                         callbacks=[bar, ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=3, save_top_k=-1)])
    model = Scalar()
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return bar, model


def test_training_bar_counts_steps_to_max_steps_and_a_resumed_one_starts_at_its_step(tmp_path, text_sources,
                                                                                      monkeypatch):
    monkeypatch.setenv("NEMO_EMMETT_CACHE", str(tmp_path / "cache"))
    cfg = data_cfg(tmp_path, text_sources, num_workers=0)
    bar, _ = fit(EmmettDataModule(cfg, text=WordLengthIds()), tmp_path / "a", max_steps=5)
    train = bar.train_progress_bar
    assert (train.total, train.initial, train.n) == (5, 0, 5)  # Lightning's own: total None ("5/?")
    assert "Training" in train.desc

    ckpt = next((tmp_path / "a" / "ckpt").glob("*step=3.ckpt"))
    bar, _ = fit(EmmettDataModule(cfg, text=WordLengthIds()), tmp_path / "b", max_steps=8, ckpt_path=ckpt)
    train = bar.train_progress_bar
    assert (train.total, train.initial, train.n) == (8, 3, 8)  # the ETA's rate counts this run's 5 steps


def test_validation_bar_counts_examples_to_the_plans_total(tmp_path, text_sources, monkeypatch):
    monkeypatch.setenv("NEMO_EMMETT_CACHE", str(tmp_path / "cache"))
    cfg = data_cfg(tmp_path, text_sources, num_workers=2)
    dm = EmmettDataModule(cfg, text=WordLengthIds())
    bar, model = fit(dm, tmp_path, max_steps=2, val_check_interval=2)
    val = bar.val_progress_bar
    assert dm.num_val_examples() == 420 == model.val_examples  # sources of 300 and 120 examples
    assert (val.total, val.n) == (420, 420)
    assert "examples" in val.desc
