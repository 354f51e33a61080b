"""The data stream resumes exactly through a real Lightning checkpoint (fit -> ckpt -> fit again)."""

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from nemo_emmett.data.batch import TranslationBatch
from nemo_emmett.data.datamodule import EmmettDataModule
from nemo_emmett.data.stats import DataStreamStats
from tests.conftest import WordLengthIds
from tests.data.test_datamodule import data_cfg


class Recorder(pl.LightningModule):
    """Trains one scalar and records the example ids of every batch it is given."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[list[str]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch.ids)
        assert isinstance(batch, TranslationBatch)  # the DataModule kept the stream state, the model gets the batch
        return (self.w * batch.target_ids.float().mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(dm, tmp_path, max_steps, ckpt_path=None):
    model = Recorder()
    trainer = pl.Trainer(
        max_steps=max_steps, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path,
        callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1),
                   DataStreamStats(every_n_steps=1)],
    )
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    # the stream's counts reach the logged metrics: every example drawn is emitted, waiting or dropped
    logged = trainer.logged_metrics
    assert logged["data/drawn_text"] >= logged["data/emitted_text"] + logged["data/dropped_no_bucket_text"] > 0
    return model.seen


@pytest.mark.parametrize("num_workers", [0, 2])
def test_fit_resume_from_checkpoint_continues_the_stream(tmp_path, text_sources, monkeypatch, num_workers):
    monkeypatch.setenv("NEMO_EMMETT_CACHE", str(tmp_path / "cache"))
    cfg = data_cfg(tmp_path, text_sources, num_workers=num_workers)
    full = fit(EmmettDataModule(cfg, text=WordLengthIds()), tmp_path / "a", max_steps=9)
    ckpt = next((tmp_path / "a" / "ckpt").glob("*step=3.ckpt"))
    resumed = fit(EmmettDataModule(cfg, text=WordLengthIds()), tmp_path / "b", max_steps=9, ckpt_path=ckpt)
    assert len(full) == 9
    assert resumed == full[3:]
