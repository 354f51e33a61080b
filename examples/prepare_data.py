"""Convert corpora (bitext, NeMo manifests, tsv) into Shar folders; same as the ``emmett-prepare`` command.

    python examples/prepare_data.py bitext --src-template 'train.{src_lang}.gz' \\
        --tgt-template 'train.{tgt_lang}.gz' --pairs en-de --dataset multi30k --out shar/
    python examples/prepare_data.py --help
"""

from nemo_emmett.data.prepare_cli import main

if __name__ == "__main__":
    raise SystemExit(main())
