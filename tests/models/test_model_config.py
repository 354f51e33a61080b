import pytest

from nemo_emmett.models.config import SalmT5Config, parse_model_config


def test_an_optimizer_block_replaces_the_default_whole():
    cfg = parse_model_config({"optim": {"optimizer": {"_target_": "torch.optim.SGD", "lr": 0.1}}})
    assert cfg.optim["optimizer"] == {"_target_": "torch.optim.SGD", "lr": 0.1}  # no AdamW betas leak in
    assert cfg.optim["lr_scheduler"] == SalmT5Config().optim["lr_scheduler"]  # blocks not given keep defaults


def test_a_scheduler_by_name_replaces_the_default_block_whole():
    cfg = parse_model_config({"optim": {"lr_scheduler": {"name": "CosineAnnealing", "min_lr": 1e-5}}})
    assert cfg.optim["lr_scheduler"] == {"name": "CosineAnnealing", "min_lr": 1e-5}  # no _target_ or max_steps: null
    cfg = parse_model_config({"optim": {"lr_scheduler": {"warmup_steps": 10}}})
    assert cfg.optim["lr_scheduler"] == {**SalmT5Config().optim["lr_scheduler"], "warmup_steps": 10}


def test_a_block_with_the_default_target_or_none_merges_into_the_default():
    default = SalmT5Config().optim["optimizer"]
    for block in ({"lr": 3e-3}, {"_target_": default["_target_"], "lr": 3e-3}):
        cfg = parse_model_config({"optim": {"optimizer": block}})
        assert cfg.optim["optimizer"] == {**default, "lr": 3e-3}  # betas and weight decay kept
    cfg = parse_model_config({"optim": {"lr_scheduler": None, "no_decay": ["bias$"]}})
    assert cfg.optim == {"optimizer": default, "lr_scheduler": None, "no_decay": ["bias$"]}


def test_unknown_model_keys_are_errors():
    with pytest.raises(Exception, match="no_such_key"):
        parse_model_config({"no_such_key": 1})
