"""What the recipe tests share: loading a recipe script as a module, and skipping without espeak-ng."""

import importlib.util
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

needs_espeak = pytest.mark.skipif(
    subprocess.run(["which", "espeak-ng"], capture_output=True).returncode != 0,
    reason="espeak-ng is not installed (apt-get install -y espeak-ng); the demo corpus needs it",
)


def load_recipe(name: str):
    """``recipes/<name>.py`` as a module (recipes are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"{name}_recipe", REPO / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
