"""Turn a training checkpoint into one self-contained model file (config, weights, tokenizer).

A thin wrapper for NeMo-style use (``python examples/export.py ...``); the code and ``--help`` are in
``nemo_emmett/cli/export.py`` (console script ``emmett-export``). Needs the package installed (``make setup``)."""

from nemo_emmett.cli.export import main

if __name__ == "__main__":
    raise SystemExit(main())
