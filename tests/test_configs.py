"""Every Hydra config under conf/ composes on its typed schema, and its data and model blocks validate."""

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from hydra.utils import get_class
from omegaconf import OmegaConf

from nemo_emmett.config_store import FAMILIES, compose_config
from nemo_emmett.data.config import parse_data_config
from nemo_emmett.models.config import parse_model_config

CONF = Path(__file__).resolve().parents[1] / "nemo_emmett" / "conf"
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
    cfg = fill_required(compose_config(name, config_dir=CONF))
    parse_data_config(cfg.data)
    get_class(cfg.model_class).config_class  # noqa: B018  (the class named by the config exists)
    parse_model_config(cfg.model, get_class(cfg.model_class).config_class)


@pytest.mark.parametrize("path", GROUPS, ids=lambda p: str(p.relative_to(CONF)))
def test_group_option_composes_into_every_top_level_config(path):
    group, option = str(path.parent.relative_to(CONF)), path.stem
    for name in TOP_LEVEL:
        cfg = fill_required(compose_config(name, [f"{group}={option}"], config_dir=CONF))
        if group == "data":
            parse_data_config(cfg.data)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_schema_names_its_model_class_and_that_class_config(family):
    model_class, config_class = FAMILIES[family]
    assert get_class(model_class).config_class is config_class


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_composed_config_holds_every_default_typed(name):
    cfg = compose_config(name, config_dir=CONF, return_hydra_config=True)
    family = cfg.hydra.runtime.choices["schema"]
    assert cfg.model_class == FAMILIES[family][0]
    assert issubclass(OmegaConf.get_type(cfg.model), get_class(cfg.model_class).config_class)
    assert cfg.model.mgcm.enabled is False and cfg.oomptimizer.enabled is False  # defaults no YAML sets
    assert cfg.data.demo.max_number == 999 and cfg.trainer.use_distributed_sampler is False


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_keys_absent_from_the_yaml_override_without_plus(name):
    cfg = fill_required(compose_config(name, ["model.mgcm.enabled=true", "oomptimizer.enabled=true",
                                              "data.size_temperature=2", "model.decoding.beam_size=3"], config_dir=CONF))
    assert cfg.model.mgcm.enabled is True and cfg.oomptimizer.enabled is True
    assert cfg.data.size_temperature == 2.0 and isinstance(cfg.data.size_temperature, float)  # typed: the int became a float
    model = parse_model_config(cfg.model, get_class(cfg.model_class).config_class)
    assert model.mgcm.enabled and model.decoding.beam_size == 3


@pytest.mark.parametrize("override", ["model.no_such_key=1", "data.size_temperatur=2.0", "oomptimizer.enable=true",
                                      "model.mgcm.enabled=maybe", "seeed=1"])
def test_an_unknown_key_or_a_mistyped_value_is_a_composition_error(override):
    with pytest.raises(ConfigCompositionException):
        compose_config("salm_t5", [override], config_dir=CONF)


def test_an_unknown_key_in_a_yaml_is_a_composition_error(tmp_path):
    (tmp_path / "bad.yaml").write_text("# bad\ndefaults:\n  - schema: salm_t5\n  - _self_\nname: bad\n"
                                       "model:\n  decodng: {beam_size: 2}\n")
    with pytest.raises(Exception, match="decodng"):
        compose_config("bad", config_dir=tmp_path)


def test_null_blocks_take_a_whole_block_override():
    """``lora`` and ``mgcm.components`` default to null: OmegaConf cannot merge into a null typed node,
    so the schema holds them as Any (config_store.composable) and parsing checks them."""
    cfg = compose_config("bestow_gpt", ["model.lora={targets: ['backbone\\..*\\.c_attn'], r: 4}",
                                        "model.mgcm.components={all: '.*'}"], config_dir=CONF)
    model = parse_model_config(cfg.model, get_class(cfg.model_class).config_class)
    assert model.lora.r == 4 and model.lora.alpha == 16.0 and model.mgcm.components == {"all": ".*"}


def test_an_optimizer_with_another_target_replaces_the_default_block():
    cfg = compose_config("salm_t5", ["model.optim.optimizer={_target_: torch.optim.SGD, lr: 0.1}"], config_dir=CONF)
    optim = parse_model_config(cfg.model).optim
    assert optim["optimizer"] == {"_target_": "torch.optim.SGD", "lr": 0.1}  # no AdamW betas or weight decay
    assert optim["lr_scheduler"]["_target_"] == "nemo.core.optim.lr_scheduler.InverseSquareRootAnnealing"  # kept
    cfg = compose_config("salm_t5", ["model.optim.optimizer.weight_decay=0.0", "model.optim.lr_scheduler=null"],
                         config_dir=CONF)
    optim = parse_model_config(cfg.model).optim
    assert optim == {"optimizer": {"_target_": "torch.optim.AdamW", "lr": 3e-3, "betas": [0.9, 0.98],
                                   "weight_decay": 0.0}, "lr_scheduler": None}


def test_the_data_sampling_rate_is_the_perception_sample_rate():
    cfg = compose_config("salm_t5", ["model.perception.sample_rate=8000"], config_dir=CONF)
    assert parse_data_config(cfg.data).sampling_rate == 8000 == parse_model_config(cfg.model).perception.sample_rate
    assert compose_config("salm_t5", config_dir=CONF).data.sampling_rate == 16000


def test_a_rank_task_table_merges_into_the_typed_modular_node():
    """training.py under component_sync: the rank's tasks replace the table in the composed (typed) config."""
    from nemo_emmett.mammoth.sync import rank_task_table

    cfg = compose_config("mammoth", config_dir=CONF)
    mine, _ = rank_task_table(OmegaConf.to_container(cfg.model.modular, resolve=True), 2, 1)
    cfg.model.modular.merge_with(mine)
    model = parse_model_config(cfg.model, get_class(cfg.model_class).config_class)
    assert [t.name for t in model.modular.tasks] == [t["name"] for t in mine["tasks"]] and 0 < len(mine["tasks"]) < 10


def test_every_config_file_opens_with_a_launch_comment():
    for path in CONF.rglob("*.yaml"):
        assert path.read_text().startswith("#"), f"{path} should open with a comment (launch command, overrides)"


def test_multirun_keeps_the_working_directory():
    cfg = compose_config("salm_t5", config_dir=CONF, return_hydra_config=True)
    assert cfg.hydra.job.chdir is False


def test_sweep_jobs_get_their_own_experiment_version():
    from nemo_emmett.training import hydra_job_num, sweep_version

    assert sweep_version(None, None) is None  # a plain run: one folder per name, re-running resumes
    assert sweep_version(None, 0) != sweep_version(None, 1)
    assert sweep_version("mine", 3) == "mine"  # an explicit version is kept
    assert hydra_job_num() is None  # outside Hydra
