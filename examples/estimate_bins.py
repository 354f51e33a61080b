"""Estimate 2D buckets from the training data of a config; print them, plot them, save them.

A thin wrapper for NeMo-style use (``python examples/estimate_bins.py ...``); the code and ``--help`` are in
``nemo_emmett/cli/estimate_bins.py`` (console script ``emmett-estimate-bins``). Needs the package installed (``make setup``)."""

from nemo_emmett.cli.estimate_bins import main

if __name__ == "__main__":
    raise SystemExit(main())
