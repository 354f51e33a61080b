"""Where the console scripts find the Hydra configs: $NEMO_EMMETT_CONF, else the package's own."""

from pathlib import Path

import pytest

from nemo_emmett.cli.paths import CONF_ENV, PACKAGED_CONF, conf_dir, conf_path

REPO = Path(__file__).resolve().parents[2]


def test_the_package_holds_the_configs_and_the_environment_wins(monkeypatch, tmp_path):
    monkeypatch.delenv(CONF_ENV, raising=False)
    assert conf_dir() == PACKAGED_CONF == REPO / "nemo_emmett" / "conf"
    assert (PACKAGED_CONF / "salm_t5.yaml").is_file()
    monkeypatch.setenv(CONF_ENV, str(tmp_path))
    assert conf_dir() == tmp_path
    monkeypatch.setenv(CONF_ENV, str(tmp_path / "missing"))
    assert conf_path() == tmp_path / "missing"
    with pytest.raises(FileNotFoundError, match=f"'{tmp_path / 'missing'}' does not exist: set {CONF_ENV}"):
        conf_dir()
