"""Where the console scripts find the Hydra configs."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

CONF_ENV = "NEMO_EMMETT_CONF"
PACKAGED_CONF = Path(__file__).resolve().parents[1] / "conf"
"""The Hydra configs shipped inside the package (``nemo_emmett/conf/``): found the same way in a clone, an
editable install and an installed wheel (package data, ``pyproject.toml``)."""


def conf_path() -> Path:
    """``$NEMO_EMMETT_CONF``, else :data:`PACKAGED_CONF`. Not checked (see :func:`conf_dir`)."""
    return Path(os.environ.get(CONF_ENV) or PACKAGED_CONF)


def conf_dir() -> Path:
    """:func:`conf_path`, which must exist."""
    path = conf_path()
    if not path.is_dir():
        raise FileNotFoundError(f"Hydra config folder {str(path)!r} does not exist: set {CONF_ENV} to a folder of "
                                f"configs (the package's own: {PACKAGED_CONF}), or pass --config-dir / --config-path")
    return path


def config_parser(doc: str | None, *, overrides_example: str) -> argparse.ArgumentParser:
    """A parser for a tool that composes a run config: ``--config-name``, ``--config-dir`` and Hydra
    overrides (the tool adds its own options)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-name", default="salm_t5")
    p.add_argument("--config-dir", default=None,
                   help=f"Hydra config folder (default: ${CONF_ENV}, else the package's nemo_emmett/conf/)")
    p.add_argument("overrides", nargs="*", help=f"Hydra overrides, e.g. {overrides_example}")
    return p


def compose_from_args(args: argparse.Namespace) -> Any:
    """The run config that :func:`config_parser`'s arguments name."""
    from nemo_emmett.config_store import compose_config

    return compose_config(args.config_name, args.overrides, config_dir=args.config_dir or conf_dir())
