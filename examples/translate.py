"""Translate text or speech with a trained nemo_emmett model; optionally score against references.

A thin wrapper for NeMo-style use (``python examples/translate.py ...``); the code and ``--help`` are in
``nemo_emmett/cli/translate.py`` (console script ``emmett-translate``). Needs the package installed (``make setup``)."""

from nemo_emmett.cli.translate import main

if __name__ == "__main__":
    raise SystemExit(main())
