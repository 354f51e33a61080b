"""Size every bucket's batch for a config's model and memory budget, and write the bucket file.

A thin wrapper for NeMo-style use (``python examples/oomptimize.py ...``); the code and ``--help`` are in
``nemo_emmett/cli/oomptimize.py`` (console script ``emmett-oomptimize``). Needs the package installed (``make setup``)."""

from nemo_emmett.cli.oomptimize import main

if __name__ == "__main__":
    raise SystemExit(main())
