"""Turn a training checkpoint into one self-contained model file (config, weights, tokenizer).

    python examples/export.py --checkpoint nemo_experiments/salm_t5/checkpoints/salm_t5--last.ckpt \\
        --out salm_t5.emmett --token-equivalent-duration 0.08

The format follows ``--out`` (or ``--format``): ``model.emmett`` an ``.emmett`` export
(``nemo_emmett.export``); ``model.nemo`` (or ``.tar``) a ``save_to`` archive; a name without a suffix
(``salm_t5/``) a ``save_pretrained`` folder (config.json, model.safetensors, tokenizer/, PEFT adapters),
which ``TranslationModel.from_pretrained`` loads. ``--checkpoint`` may be any saved model, to convert it.

``--hf-backbone DIR`` writes the model's Hugging Face backbone and its tokenizer as a ``save_pretrained``
folder instead, which a later run loads as ``model.backbone.pretrained_path`` (``recipes/forgetting.py``).

Run it where the checkpoint's tokenizer (and pretrained backbone or ASR .nemo, if any) exist; the
result restores anywhere with ``nemo_emmett.export.load_model`` or ``examples/translate.py``.
Errors: one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROG = "emmett-export"
FORMATS = {".emmett": "emmett", ".nemo": "archive", ".tar": "archive", "": "pretrained"}
"""``--out`` suffix -> the format written when ``--format`` is not given."""


def output_format(out: str, given: str | None) -> str:
    """The format to write ``out`` in: ``given``, else the one its suffix names (:data:`FORMATS`)."""
    if given is not None:
        return given
    if out.endswith("/"):
        return "pretrained"
    suffix = Path(out).suffix
    if suffix not in FORMATS:
        raise ValueError(f"--out {out!r}: the suffix {suffix!r} names no format; use .emmett, .nemo or a folder "
                         f"name without a suffix, or give --format")
    return FORMATS[suffix]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="Lightning .ckpt (or a saved model of any format, to convert it)")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", help="output: model.emmett, model.nemo (archive) or a folder name (save_pretrained)")
    out.add_argument("--hf-backbone", metavar="DIR", help="write the backbone and tokenizer as a Hugging Face folder")
    p.add_argument("--format", choices=["emmett", "archive", "pretrained"], default=None,
                   help="what --out is written as (default: from its suffix)")
    p.add_argument("--model-class", default=None, help="default: nemo_emmett.models.salm_t5.SalmT5")
    p.add_argument("--token-equivalent-duration", type=float, default=None,
                   help="seconds of speech per input token used in training (recorded with the model)")
    args = p.parse_args(argv)
    try:
        if not Path(args.checkpoint).exists():
            raise FileNotFoundError(f"--checkpoint {args.checkpoint!r} does not exist")
        from nemo_emmett.export import export_model, load_model
        from nemo_emmett.models.backbone_folder import save_backbone_pretrained

        fmt = output_format(args.out, args.format) if args.out is not None else None
        model = load_model(args.checkpoint, model_class=args.model_class)
        if args.hf_backbone is not None:
            folder = save_backbone_pretrained(model, args.hf_backbone)
            print(f"Saved the backbone of {args.checkpoint} -> {folder} (load it as model.backbone.pretrained_path)")
            return 0
        ted = args.token_equivalent_duration
        if fmt == "pretrained":
            folder = model.save_pretrained(args.out, token_equivalent_duration=ted)
            print(f"Saved {args.checkpoint} -> {folder}/ (TranslationModel.from_pretrained)")
            return 0
        if fmt == "archive":
            path = model.save_to(args.out, token_equivalent_duration=ted)
        else:
            path = export_model(model, args.out, token_equivalent_duration=ted)
    except (FileNotFoundError, FileExistsError, ValueError, TypeError, ImportError, RuntimeError, OSError) as e:
        print(f"{PROG}: error: {e}".replace("\n", " "), file=sys.stderr)
        return 2
    print(f"Exported {args.checkpoint} -> {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
