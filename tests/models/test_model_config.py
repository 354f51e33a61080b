import pytest

from nemo_emmett.models.config import SalmT5Config, parse_model_config


def test_an_optimizer_block_replaces_the_default_whole():
    cfg = parse_model_config({"optim": {"optimizer": {"_target_": "torch.optim.SGD", "lr": 0.1}}})
    assert cfg.optim["optimizer"] == {"_target_": "torch.optim.SGD", "lr": 0.1}  # no AdamW betas leak in
    assert cfg.optim["lr_scheduler"] == SalmT5Config().optim["lr_scheduler"]  # blocks not given keep defaults


def test_unknown_model_keys_are_errors():
    with pytest.raises(Exception, match="no_such_key"):
        parse_model_config({"no_such_key": 1})
