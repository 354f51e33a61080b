"""Check the data pipeline of a config without training: sources and weights, the 2D buckets with

A thin wrapper for NeMo-style use (``python examples/inspect_data.py ...``); the code and ``--help`` are in
``nemo_emmett/cli/inspect_data.py`` (console script ``emmett-inspect-data``). Needs the package installed (``make setup``)."""

from nemo_emmett.cli.inspect_data import main

if __name__ == "__main__":
    raise SystemExit(main())
