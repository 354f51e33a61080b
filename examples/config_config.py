"""Write the complete Hydra config of a modular (MAMMOTH) model from a short meta-config.

A thin wrapper for NeMo-style use (``python examples/config_config.py ...``); the code and ``--help`` are in
``nemo_emmett/cli/config.py`` (console script ``emmett-config``). Needs the package installed (``make setup``)."""

from nemo_emmett.cli.config import main

if __name__ == "__main__":
    raise SystemExit(main())
