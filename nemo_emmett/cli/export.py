"""Turn a training checkpoint into one self-contained model file (config, weights, tokenizer).

    python examples/export.py --checkpoint nemo_experiments/salm_t5/checkpoints/salm_t5--last.ckpt \\
        --out salm_t5.emmett --token-equivalent-duration 0.08

``--hf-backbone DIR`` writes the model's Hugging Face backbone and its tokenizer as a ``save_pretrained``
folder instead, which a later run loads as ``model.backbone.pretrained_path`` (``recipes/forgetting.py``).

Run it where the checkpoint's tokenizer (and pretrained backbone or ASR .nemo, if any) exist; the
result restores anywhere with ``nemo_emmett.export.restore_model`` or ``examples/translate.py``.
Errors: one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROG = "emmett-export"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="Lightning .ckpt (or an export, to re-export it)")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", help="output file, e.g. model.emmett")
    out.add_argument("--hf-backbone", metavar="DIR", help="write the backbone and tokenizer as a Hugging Face folder")
    p.add_argument("--model-class", default=None, help="default: nemo_emmett.models.salm_t5.SalmT5")
    p.add_argument("--token-equivalent-duration", type=float, default=None,
                   help="seconds of speech per input token used in training (recorded in meta.json)")
    args = p.parse_args(argv)
    try:
        if not Path(args.checkpoint).is_file():
            raise FileNotFoundError(f"--checkpoint {args.checkpoint!r} does not exist")
        from nemo_emmett.export import export_model, load_model
        from nemo_emmett.models.backbone_folder import save_backbone_pretrained

        model = load_model(args.checkpoint, model_class=args.model_class)
        if args.hf_backbone is not None:
            folder = save_backbone_pretrained(model, args.hf_backbone)
            print(f"Saved the backbone of {args.checkpoint} -> {folder} (load it as model.backbone.pretrained_path)")
            return 0
        out = export_model(model, args.out, token_equivalent_duration=args.token_equivalent_duration)
    except (FileNotFoundError, FileExistsError, ValueError, TypeError, ImportError, RuntimeError, OSError) as e:
        print(f"{PROG}: error: {e}".replace("\n", " "), file=sys.stderr)
        return 2
    print(f"Exported {args.checkpoint} -> {out} ({out.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
