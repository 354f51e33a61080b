"""Every third-party module that nemo_emmett imports is declared in pyproject.toml, by the distribution that
installs it (``importlib.metadata.packages_distributions``); an optional extra's module only where allowed.
``requirements.txt`` lists the same core dependencies."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="reads pyproject.toml with Python 3.11's tomllib")

REPO = Path(__file__).resolve().parents[1]
OPTIONAL = {"simuleval": ("simul", {"nemo_emmett/simul/agent.py"})}
"""Import name -> (the extra that declares it, the only modules that may import it)."""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(spec: str) -> str:
    return canonical(re.match(r"[A-Za-z0-9._-]+", spec.strip()).group(0))


def third_party_imports(package: Path = REPO / "nemo_emmett") -> dict[str, set[str]]:
    """Top-level module -> the files (repo-relative) that import it, for every absolute import that is not
    the standard library or nemo_emmett itself (imports inside functions count too)."""
    found: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in {n.split(".")[0] for n in names} - set(sys.stdlib_module_names) - {"nemo_emmett", "__future__"}:
                found.setdefault(top, set()).add(path.relative_to(REPO).as_posix())
    return found


def distributions(module: str) -> set[str]:
    """The distributions that install ``module`` here; its own name when none does (an extra not installed)."""
    return {canonical(d) for d in importlib.metadata.packages_distributions().get(module, [module])}


def test_every_import_is_declared():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = {requirement_name(r) for r in project["dependencies"]}
    extras = {k: {requirement_name(r) for r in v} for k, v in project["optional-dependencies"].items()}
    problems = []
    for module, files in sorted(third_party_imports().items()):
        dists = distributions(module)
        if dists & core:
            continue
        extra, allowed = OPTIONAL.get(module, (None, set()))
        if extra is not None and dists & extras[extra] and files <= allowed:
            continue
        problems.append(f"{module} (distribution {' or '.join(sorted(dists))}) imported by {sorted(files - allowed)}")
    assert not problems, "imports not declared in pyproject.toml [project] dependencies:\n  " + "\n  ".join(problems)


def test_the_scan_sees_what_it_must():
    found = third_party_imports()
    assert {"torch", "nemo", "yaml", "soxr", "simuleval"} <= set(found)  # soxr: imported inside a function
    assert "nemo_emmett/simul/agent.py" in found["simuleval"]
    assert not {"os", "typing", "nemo_emmett", "__future__"} & set(found)
    assert distributions("yaml") == {"pyyaml"} and distributions("nemo") == {"nemo-toolkit"}


def test_requirements_txt_lists_the_core_dependencies():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = [ln for ln in (REPO / "requirements.txt").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert sorted(lines) == sorted(project["dependencies"])
