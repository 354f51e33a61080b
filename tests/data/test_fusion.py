"""``data.fusion: zip``: every training step is the next audio batch and the next text batch, each from
its own modality's resumable stream; bad settings are errors that name the key and the value."""

import itertools

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from nemo_emmett.data.batch import FusedBatch
from nemo_emmett.data.config import parse_data_config
from nemo_emmett.data.datamodule import EmmettDataModule
from tests.conftest import WordLengthIds, write_audio_source
from tests.data.test_datamodule import data_cfg


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NEMO_EMMETT_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def fused_cfg(tmp_path, text_sources):
    audio = write_audio_source(tmp_path / "au", "au", 40)
    return data_cfg(tmp_path, text_sources, num_workers=0, audio=audio, fusion="zip", estimation_examples=50)


def steps(dm, it, n):
    """(audio ids, text ids) of the next ``n`` fused steps, recorded as training records them."""
    out = []
    for _ in range(n):
        b = dm.record(next(it))
        out.append((tuple(b.audio.ids), tuple(b.text.ids)))
    return out


def test_every_step_holds_an_audio_and_a_text_batch_within_their_buckets(fused_cfg):
    dm = EmmettDataModule(fused_cfg, text=WordLengthIds())
    it = iter(dm.train_dataloader())
    sizes = {m: dm.plan.buckets[m].batch_sizes for m in ("audio", "text")}
    for item in itertools.islice(it, 12):
        b = item.batch
        assert isinstance(b, FusedBatch) and set(item.state.sampler) == {"audio", "text"}
        for part in b.parts:
            assert set(part.tasks) <= ({"st", "asr"} if part.modality == "audio" else {"mt"})
            assert 1 <= len(part) <= sizes[part.modality][part.bucket]
        dm.record(item)
    stats = dm.stream_stats()  # both samplers' counts, per modality
    assert stats["emitted_audio"] > 0 and stats["emitted_text"] > 0


@pytest.mark.parametrize(("num_workers", "stop_after"), [(0, 5), (2, 5)])
def test_resume_continues_both_streams_exactly(fused_cfg, num_workers, stop_after):
    cfg = {**fused_cfg, "num_workers": num_workers}
    dm = EmmettDataModule(cfg, text=WordLengthIds())
    it = iter(dm.train_dataloader())
    steps(dm, it, stop_after)
    state = dm.state_dict()
    reference = steps(dm, it, 8)
    del it

    resumed = EmmettDataModule(cfg, text=WordLengthIds())
    resumed.load_state_dict(state)
    assert steps(resumed, iter(resumed.train_dataloader()), 8) == reference


def test_resuming_across_fusion_modes_is_refused(fused_cfg):
    dm = EmmettDataModule(fused_cfg, text=WordLengthIds())
    steps(dm, iter(dm.train_dataloader()), 2)
    plain = EmmettDataModule({**fused_cfg, "fusion": "none"}, text=WordLengthIds())
    plain.load_state_dict(dm.state_dict())
    with pytest.raises(ValueError, match="made with data.fusion=zip, this run has data.fusion=none"):
        next(iter(plain.train_dataloader()))


def test_bad_fusion_settings_name_the_key_and_the_value(tmp_path, text_sources, fused_cfg):
    with pytest.raises(ValueError, match=r"data.fusion: unknown mode 'zap'; expected one of none, zip"):
        parse_data_config({"fusion": "zap"})
    text_only = data_cfg(tmp_path, text_sources, num_workers=0, fusion="zip")
    with pytest.raises(ValueError, match=r"data.fusion='zip' .* no training source is audio .*'a' \(text\)"):
        EmmettDataModule(text_only, text=WordLengthIds()).setup()
    late = {**fused_cfg, "train_sources": [dict(s) for s in fused_cfg["train_sources"]]}
    late["train_sources"][2]["introduce_at_step"] = 10  # the only audio source
    with pytest.raises(ValueError, match=r"data.fusion='zip': every audio source has introduce_at_step > 0"):
        EmmettDataModule(late, text=WordLengthIds()).setup()


class FusedRecorder(pl.LightningModule):
    """Trains one scalar and records the (audio ids, text ids) of every fused step it is given."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[tuple[tuple[str, ...], tuple[str, ...]]] = []

    def training_step(self, batch, batch_idx):
        assert isinstance(batch, FusedBatch)
        self.seen.append((tuple(batch.audio.ids), tuple(batch.text.ids)))
        return (self.w * sum(b.target_ids.float().mean() for b in batch.parts)).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(dm, root, max_steps, ckpt_path=None):
    model = FusedRecorder()
    trainer = pl.Trainer(max_steps=max_steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, default_root_dir=root,
                         callbacks=[ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=3, save_top_k=-1)])
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return model.seen


def test_a_lightning_checkpoint_resumes_the_same_fused_steps(fused_cfg, tmp_path):
    cfg = {**fused_cfg, "num_workers": 2}
    full = fit(EmmettDataModule(cfg, text=WordLengthIds()), tmp_path / "a", max_steps=7)
    ckpt = next((tmp_path / "a" / "ckpt").glob("*step=3.ckpt"))
    resumed = fit(EmmettDataModule(cfg, text=WordLengthIds()), tmp_path / "b", max_steps=7, ckpt_path=ckpt)
    assert len(full) == 7 and resumed == full[3:]
