"""Train a nemo_emmett model with Hydra, Lightning and NeMo's exp_manager.

A thin wrapper for NeMo-style use (``python examples/train.py ...``); the code and ``--help`` are in
``nemo_emmett/cli/train.py`` (console script ``emmett-train``). Needs the package installed (``make setup``)."""

from nemo_emmett.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
