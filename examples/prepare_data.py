"""Convert corpora (bitext, NeMo manifests, tsv) into Shar folders.

A thin wrapper for NeMo-style use (``python examples/prepare_data.py bitext ...``); the code and ``--help``
are in ``nemo_emmett/data/prepare/cli.py`` (console script ``emmett-prepare``). Needs the package installed."""

from nemo_emmett.data.prepare.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
