"""Every Hydra config under conf/ composes, and its data group validates against DataConfig."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from omegaconf import OmegaConf

from nemo_emmett.data.config import parse_data_config
from nemo_emmett.models.config import parse_model_config

CONF = Path(__file__).resolve().parents[1] / "conf"
TOP_LEVEL = sorted(p.stem for p in CONF.glob("*.yaml"))
GROUPS = sorted(p for p in CONF.rglob("*.yaml") if p.parent != CONF)


def test_there_are_configs():
    assert "salm_t5" in TOP_LEVEL


def fill_required(cfg):
    """Required top-level values (``???``, e.g. a data root) get a placeholder so the rest resolves."""
    for key in [k for k in cfg if OmegaConf.is_missing(cfg, k)]:
        cfg[key] = "/placeholder"
    return cfg


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_top_level_config_composes(name):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = fill_required(compose(config_name=name))
    parse_data_config(cfg.data)
    get_class(cfg.model_class).config_class  # noqa: B018  (the class named by the config exists)
    parse_model_config(cfg.model, get_class(cfg.model_class).config_class)


@pytest.mark.parametrize("path", GROUPS, ids=lambda p: str(p.relative_to(CONF)))
def test_group_option_composes_into_every_top_level_config(path):
    group, option = str(path.parent.relative_to(CONF)), path.stem
    for name in TOP_LEVEL:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = fill_required(compose(config_name=name, overrides=[f"{group}={option}"]))
        if group == "data":
            parse_data_config(cfg.data)


def test_every_config_file_opens_with_a_launch_comment():
    for path in CONF.rglob("*.yaml"):
        assert path.read_text().startswith("#"), f"{path} should open with a comment (launch command, overrides)"


def test_multirun_keeps_the_working_directory():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="salm_t5", return_hydra_config=True)
    assert cfg.hydra.job.chdir is False


def test_sweep_jobs_get_their_own_experiment_version():
    from nemo_emmett.training import hydra_job_num, sweep_version

    assert sweep_version(None, None) is None  # a plain run: one folder per name, re-running resumes
    assert sweep_version(None, 0) != sweep_version(None, 1)
    assert sweep_version("mine", 3) == "mine"  # an explicit version is kept
    assert hydra_job_num() is None  # outside Hydra
