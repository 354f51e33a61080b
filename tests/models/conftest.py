"""A tiny SentencePiece model and tiny model configs, shared by the model tests."""

from __future__ import annotations

import pytest

from nemo_emmett.data.tokenizer import train_sentencepiece

LINES = [f"{a} {b} {c}" for a in ("one", "two", "three", "vier", "fünf") for b in ("hundred", "hundert", "cent")
         for c in ("and nine", "neun", "neuf", "sixty")]

TINY_BACKBONE = {"model_type": "t5", "d_model": 32, "d_ff": 64, "d_kv": 8, "num_heads": 4, "num_layers": 1,
                 "num_decoder_layers": 1}
TINY_PERCEPTION = {"d_model": 32, "n_layers": 1, "n_heads": 4, "subsampling_conv_channels": 16, "adapter_layers": 1}


@pytest.fixture(scope="session")
def spm_path(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("spm")
    return str(train_sentencepiece(LINES * 3, vocab_size=60, key={"test": "tiny"}, out_dir=out,
                                   user_defined_symbols=["<de>", "<en>", "<fr>"]))


@pytest.fixture
def tiny_cfg(spm_path) -> dict:
    return {"tokenizer": {"spm_path": spm_path}, "backbone": {"config": dict(TINY_BACKBONE)},
            "perception": dict(TINY_PERCEPTION), "optim": {"optimizer": {"_target_": "torch.optim.AdamW", "lr": 1e-2},
                                                           "lr_scheduler": None}}
