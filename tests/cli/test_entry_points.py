"""Every console script in pyproject.toml resolves to a main(); examples/*.py only wrap them."""

import ast
import importlib
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def test_the_documented_console_scripts_are_declared():
    assert {"emmett-train", "emmett-translate", "emmett-export", "emmett-prepare", "emmett-oomptimize",
            "emmett-config", "emmett-estimate-bins", "emmett-inspect-data"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_console_script_answers_help(name, capsys):
    module, _, func = SCRIPTS[name].partition(":")
    main = getattr(importlib.import_module(module), func)
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_train_entry_point_is_a_hydra_main():
    module, _, func = SCRIPTS["emmett-train"].partition(":")
    assert callable(getattr(importlib.import_module(module), func))


def test_train_help_is_short_and_names_the_configs_and_where_the_rest_is(capsys):
    """Not Hydra's: every key of the composed config, ~160 lines without a word of help."""
    from nemo_emmett.cli.train import main

    with pytest.raises(SystemExit) as e:
        main(["--config-name", "bestow_gpt", "-h"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) <= 40
    for name in (p.stem for p in (REPO / "conf").glob("*.yaml")):
        assert f"--config-name {name} " in out
    assert "SALM-T5" in out and "trainer.max_steps=" in out and "model.mgcm.enabled=true" in out
    assert "--cfg job" in out and "config_store.py" in out and "create_wandb_logger" in out


@pytest.mark.parametrize("path", sorted((REPO / "examples").glob("*.py")), ids=lambda p: p.name)
def test_example_is_a_thin_wrapper_of_a_console_script(path):
    tree = ast.parse(path.read_text())
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    targets = {f"{n.module}:{a.name}" for n in imports for a in n.names}
    assert targets & set(SCRIPTS.values()), f"{path.name} should import the main() of a console script"
    assert len(path.read_text().splitlines()) <= 15, f"{path.name} should only wrap its console script"


def test_nothing_edits_sys_path():
    offenders = [str(p.relative_to(REPO)) for folder in ("nemo_emmett", "examples")
                 for p in (REPO / folder).rglob("*.py") if "sys.path.insert" in p.read_text()]
    assert offenders == []
