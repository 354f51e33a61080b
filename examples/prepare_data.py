"""Convert corpora (bitext, NeMo manifests, tsv) into Shar folders; same as the ``emmett-prepare`` command.

    python examples/prepare_data.py bitext --src-template 'train.{src_lang}.gz' \\
        --tgt-template 'train.{tgt_lang}.gz' --pairs en-de --dataset multi30k --out shar/
    python examples/prepare_data.py --help
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain clone, too

from nemo_emmett.data.prepare.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
