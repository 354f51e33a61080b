"""No YAML under conf/ repeats a default: each key must change what the config would be without it.

A file's keys are compared with its *baseline*: the config composed with the file's own values taken
out (its schema's dataclass defaults, overlaid by the configs it extends). A key equal to its baseline
value is a default repeated (leave it out); a key of a typed node its schema lacks is an error. Lists
are one value each (a task or source table is compared whole); free-form dicts (``trainer``,
``backbone.config``) allow new keys. ``model.optim``'s baseline is the effective optimizer
(``merge_optim``); a block naming another ``_target_`` replaces the default, so its keys are all new.
``recipes/*.meta.yaml`` are meta-configs of ``examples/config_config.py``, not Hydra configs: not walked.
"""

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import DictConfig, OmegaConf

from nemo_emmett.config_store import compose_config
from nemo_emmett.models.config import merge_optim

CONF = Path(__file__).resolve().parents[1] / "nemo_emmett" / "conf"
FILES = sorted(p.relative_to(CONF) for p in CONF.rglob("*.yaml"))
SKIP = ("defaults", "hydra")


def problems_of(rel: Path, tmp: Path, conf: Path = CONF) -> list[str]:
    """The repeated defaults and unknown keys of ``conf/rel``."""
    values = OmegaConf.to_container(OmegaConf.load(conf / rel), resolve=False) or {}  # as Hydra reads it: 3e-3 a float
    return repeated_or_unknown(values, *baseline(rel, tmp, conf))


def baseline(rel: Path, tmp: Path, conf: Path) -> tuple[dict[str, Any], DictConfig]:
    """What the file ``rel`` contributes to, composed with the file's values taken out: plain values
    (``model.optim`` as the effective optimizer) and the typed node (for its schema's keys)."""
    emptied = tmp / "conf"
    shutil.copytree(conf, emptied)
    raw = yaml.safe_load((conf / rel).read_text()) or {}
    (emptied / rel).write_text(yaml.safe_dump({k: raw[k] for k in SKIP if k in raw}))
    group = ".".join(rel.parent.parts)
    cfg = compose_config(rel.stem if not group else "salm_t5", config_dir=emptied)
    typed = OmegaConf.select(cfg, group) if group else cfg
    plain = OmegaConf.to_container(typed, resolve=False)
    if "model" in typed:  # the optimizer a config gets: the dataclass default with the blocks given merged in
        plain["model"]["optim"] = merge_optim(OmegaConf.get_type(typed.model)().optim, plain["model"]["optim"])
    return plain, typed


def same(a: Any, b: Any) -> bool:
    return a == b and (isinstance(a, bool) == isinstance(b, bool))


def repeated_or_unknown(values: dict[str, Any], base: Any, schema: Any, where: str = "") -> list[str]:
    """Keys of ``values`` equal to their ``base`` value, or unknown to a typed ``schema`` node."""
    problems = []
    for key, value in values.items():
        path = f"{where}{key}"
        if not where and key in SKIP:
            continue
        typed = isinstance(schema, DictConfig) and OmegaConf.get_type(schema) not in (dict, None)
        if typed and key not in list(schema.keys()):  # `in schema` is False for a required (???) key
            problems.append(f"{path}: not a key of {OmegaConf.get_type(schema).__name__}")
        elif not isinstance(base, dict) or key not in base:
            continue  # a new key of a free-form dict
        elif isinstance(value, dict) and isinstance(base[key], dict):
            old = base[key]
            if path.startswith("model.optim.") and value.get("_target_", old.get("_target_")) != old.get("_target_"):
                continue  # another optimizer or scheduler: the block replaces the default whole
            sub = schema.get(key) if isinstance(schema, DictConfig) else None
            problems += repeated_or_unknown(value, old, sub, f"{path}.")
        elif same(value, base[key]):
            problems.append(f"{path}: {value!r} is the default; leave it out")
    return problems


@pytest.mark.parametrize("rel", FILES, ids=str)
def test_no_yaml_repeats_a_default_or_names_an_unknown_key(rel, tmp_path):
    problems = problems_of(rel, tmp_path)
    assert not problems, f"conf/{rel}:\n  " + "\n  ".join(problems)


def mutated(tmp: Path, rel: str, extra: dict[str, Any]) -> Path:
    """A copy of conf/ whose ``rel`` also holds ``extra`` (merged into its values)."""
    conf = tmp / "mutated"
    if not conf.exists():
        shutil.copytree(CONF, conf)
    values = OmegaConf.merge(OmegaConf.load(conf / rel), extra)
    (conf / rel).write_text("# mutated\n" + OmegaConf.to_yaml(values))
    return conf


def test_the_check_catches_a_default_put_back(tmp_path):
    """Mutation check: defaults put back into the YAMLs are reported, at any depth, against the schema, a
    parent config and in a group file; another optimizer's arguments and new trainer keys are not."""
    conf = mutated(tmp_path, "salm_t5.yaml", {
        "seed": 1234, "trainer": {"max_steps": 1200, "accumulate_grad_batches": 2}, "oomptimizer": {"enabled": False},
        "model": {"mgcm": {"granularity": "module"}, "decoding": {"beam_size": 1}, "audio_position": "before_prompt",
                  "optim": {"optimizer": {"betas": [0.9, 0.98]}, "lr_scheduler": {"_target_": "x.Y", "warmup_steps": 100}}}})
    assert sorted(problems_of(Path("salm_t5.yaml"), tmp_path / "a", conf)) == [
        "model.audio_position: 'before_prompt' is the default; leave it out",
        "model.decoding.beam_size: 1 is the default; leave it out",
        "model.mgcm.granularity: 'module' is the default; leave it out",
        "model.optim.optimizer.betas: [0.9, 0.98] is the default; leave it out",
        "oomptimizer.enabled: False is the default; leave it out",
        "seed: 1234 is the default; leave it out",
        "trainer.max_steps: 1200 is the default; leave it out",
    ]
    mutated(tmp_path, "salm_t5_multi30k.yaml", {"model": {"backbone": {"config": {"num_heads": 4}}}})  # as salm_t5's
    assert problems_of(Path("salm_t5_multi30k.yaml"), tmp_path / "b", conf) == [
        "model.backbone.config.num_heads: 4 is the default; leave it out"]
    mutated(tmp_path, "data/default.yaml", {"size_temperature": 1.0, "text_buckets": {"num_input_bins": 4}})
    assert problems_of(Path("data/default.yaml"), tmp_path / "c", conf) == [
        "size_temperature: 1.0 is the default; leave it out", "text_buckets.num_input_bins: 4 is the default; leave it out"]


def test_the_check_catches_an_unknown_key(tmp_path):
    base, schema = baseline(Path("salm_t5.yaml"), tmp_path, CONF)
    assert repeated_or_unknown({"model": {"decodng": {"beam_size": 2}, "mgcm": {"enable": True}}}, base, schema) == [
        "model.decodng: not a key of SalmT5Config", "model.mgcm.enable: not a key of MGCMConfig"]
