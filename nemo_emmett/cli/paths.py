"""Where the console scripts find the Hydra configs."""

from __future__ import annotations

import os
from pathlib import Path

CONF_ENV = "NEMO_EMMETT_CONF"


def conf_dir() -> Path:
    """``$NEMO_EMMETT_CONF``, else the ``conf/`` folder of the clone this package is installed from
    (``pip install -e .``); configs are not packaged into wheels."""
    path = Path(os.environ.get(CONF_ENV) or Path(__file__).resolve().parents[2] / "conf")
    if not path.is_dir():
        raise FileNotFoundError(f"Hydra config folder {str(path)!r} does not exist: set {CONF_ENV} to the conf/ "
                                "folder of a nemo_emmett clone, or pass --config-dir / --config-path")
    return path
