"""Where the console scripts find the Hydra configs."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

CONF_ENV = "NEMO_EMMETT_CONF"


def conf_path() -> Path:
    """``$NEMO_EMMETT_CONF``, else the ``conf/`` folder of the clone this package is installed from
    (``pip install -e .``); configs are not packaged into wheels. Not checked (see :func:`conf_dir`)."""
    return Path(os.environ.get(CONF_ENV) or Path(__file__).resolve().parents[2] / "conf")


def conf_dir() -> Path:
    """:func:`conf_path`, which must exist."""
    path = conf_path()
    if not path.is_dir():
        raise FileNotFoundError(f"Hydra config folder {str(path)!r} does not exist: set {CONF_ENV} to the conf/ "
                                "folder of a nemo_emmett clone, or pass --config-dir / --config-path")
    return path


def config_parser(doc: str | None, *, overrides_example: str) -> argparse.ArgumentParser:
    """A parser for a tool that composes a run config: ``--config-name``, ``--config-dir`` and Hydra
    overrides (the tool adds its own options)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-name", default="salm_t5")
    p.add_argument("--config-dir", default=None, help="Hydra config folder (default: the clone's conf/)")
    p.add_argument("overrides", nargs="*", help=f"Hydra overrides, e.g. {overrides_example}")
    return p


def compose_from_args(args: argparse.Namespace) -> Any:
    """The run config that :func:`config_parser`'s arguments name."""
    from nemo_emmett.config_store import compose_config

    return compose_config(args.config_name, args.overrides, config_dir=args.config_dir or conf_dir())
