"""The wheel installs and runs outside the repository: the Hydra configs ship inside it, and the console
scripts find them without a clone.

Builds the wheel from a copy of what it is made of (so the build writes nothing into the repo), installs it
with ``--no-deps`` into a fresh venv that reuses this environment's packages (no network), and from a folder
outside the repo imports nemo_emmett and runs ``emmett-train --cfg job``, which composes ``salm_t5``, and ``--help``, which lists the installed configs."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MISSING = [m for m in ("venv", "ensurepip", "pip", "setuptools") if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"building and installing a wheel needs {MISSING}")


def run(cmd: list[str], cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("NEMO_EMMETT_CONF", "PYTHONPATH")}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the wheel, the venv it is installed in)."""
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "nemo_emmett", src / "nemo_emmett", ignore=shutil.ignore_patterns("__pycache__"))
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", str(tmp / "dist"), str(src)], cwd=tmp)
    (wheel,) = (tmp / "dist").glob("nemo_emmett-*.whl")
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], cwd=tmp)
    python = venv / "bin" / "python"
    # --system-site-packages reaches the base interpreter's packages; when this one is itself a venv, its
    # packages (the heavy stack) are added after the new venv's own, which keep precedence.
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp).stdout
    Path(purelib.strip(), "parent_env.pth").write_text("\n".join([*site.getsitepackages(),
                                                                  sysconfig.get_paths()["purelib"]]) + "\n")
    run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], cwd=tmp)
    return wheel, venv


def test_the_wheel_holds_every_config(installed):
    wheel, _ = installed
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("nemo_emmett/conf/")}
    in_repo = {p.relative_to(REPO).as_posix() for p in (REPO / "nemo_emmett" / "conf").rglob("*.yaml")}
    assert in_repo and shipped == in_repo


def test_installed_package_runs_outside_the_repo(installed, tmp_path):
    _, venv = installed
    probe = ("import json, nemo_emmett; from nemo_emmett.cli.paths import conf_dir; "
             "print(json.dumps({'file': nemo_emmett.__file__, 'conf': str(conf_dir())}))")
    where = json.loads(run([str(venv / "bin" / "python"), "-c", probe], cwd=tmp_path).stdout)
    assert Path(where["file"]).is_relative_to(venv) and Path(where["conf"]).is_relative_to(venv)
    assert (Path(where["conf"]) / "salm_t5.yaml").is_file()
    # the console script composes its default config (salm_t5) from the installed package's configs
    out = run([str(venv / "bin" / "emmett-train"), "--cfg", "job"], cwd=tmp_path, timeout=180).stdout
    assert "model_class: nemo_emmett.models.salm_t5.SalmT5" in out and "name: salm_t5" in out
    listed = run([str(venv / "bin" / "emmett-train"), "--help"], cwd=tmp_path, timeout=180).stdout
    assert "--config-name salm_t5" in listed and str(venv) in listed  # the configs it found: the installed ones
