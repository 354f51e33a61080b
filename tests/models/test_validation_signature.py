"""The validation log line carries the sacrebleu signatures of its scores."""

import logging

import lightning.pytorch as pl
import pytest
from torch.utils.data import DataLoader

from nemo_emmett.models.salm_t5 import SalmT5
from nemo_emmett.parts.metrics import signature_text
from tests.models.test_salm_t5 import text_batch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_validation_log_line_ends_with_the_signatures(tiny_cfg, tmp_path, caplog):
    model = SalmT5(tiny_cfg)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path)
    with caplog.at_level(logging.INFO, logger="nemo_emmett.models.base"):
        trainer.validate(model, dataloaders=DataLoader([text_batch(model)], batch_size=None), verbose=False)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("validation: ")]
    assert len(lines) == 1
    assert "bleu/mt:en-de=" in lines[0]
    assert lines[0].endswith(f"({signature_text(['de'])})")
