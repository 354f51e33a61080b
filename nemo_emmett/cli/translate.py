"""Translate text or speech with a trained nemo_emmett model; optionally score against references.

    python examples/translate.py --model model.emmett --text "three hundred" --source-lang en --target-lang de
    python examples/translate.py --model model.emmett --text-file test.en --source-lang en --target-lang de \\
        --reference test.de --output hyps.de
    python examples/translate.py --model model.emmett --audio a.wav --audio b.wav --source-lang en --target-lang de
    python examples/translate.py --model model.emmett --audio a.wav --source-lang en --task asr
    python examples/translate.py --model model.emmett --shar shar/st_en-de          # scores with the stored targets
    python examples/translate.py --model model.emmett --manifest test.json --source-lang en --target-lang de

``--model`` is a single-file export (``examples/export.py``) or a Lightning ``.ckpt`` (whose
tokenizer and backbone paths must still exist). A modular (MAMMOTH) export is loaded with only the
components of the direction(s) asked for (all of them for ``--manifest``). Hypotheses go to ``--output`` or stdout, one per
line in input order; a direction the model does not know (a target language it never saw) is an error
before decoding (``inference.check_direction``); scores (sacrebleu BLEU and chrF per direction, WER for asr) go to stdout
after writing ``--output``, else to stderr, followed by their sacrebleu signatures; ``--scores-json``
also writes them (and the signatures) as JSON. Errors: one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

PROG = "emmett-translate"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True,
                   help="saved model: a save_pretrained folder, a .nemo archive, an .emmett export or a Lightning .ckpt")
    p.add_argument("--model-class", default=None,
                   help="model class of a .ckpt (default: the class the checkpoint records)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", action="append", help="a line to translate (repeatable)")
    src.add_argument("--text-file", help="a file with one line to translate per line")
    src.add_argument("--audio", action="append", help="an audio file to translate or transcribe (repeatable)")
    src.add_argument("--shar", help="a Shar folder (audio or text); tasks, languages and references come with it")
    src.add_argument("--manifest", help="a NeMo manifest: audio_filepath, text, optional answer/target_text")
    p.add_argument("--source-lang", help="source language (required for --text/--text-file/--audio)")
    p.add_argument("--target-lang", help="target language (required except for --task asr and --shar)")
    p.add_argument("--task", choices=["st", "asr"], default="st", help="for audio input (default: st)")
    p.add_argument("--output", help="hypotheses file (default: stdout)")
    p.add_argument("--reference", help="reference file, one line per input, to score against")
    p.add_argument("--scores-json", help="also write the scores, with their sacrebleu signatures, to this JSON file")
    p.add_argument("--beam-size", type=_positive, default=None, help="default: the model's decoding.beam_size")
    p.add_argument("--max-new-tokens", type=_positive, default=None, help="default: the model's decoding setting")
    p.add_argument("--batch-size", type=_positive, default=16)
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _check_args(args)
        return run(args)
    except (FileNotFoundError, ValueError, TypeError, ImportError, RuntimeError, OSError) as e:
        print(f"{PROG}: error: {e}".replace("\n", " "), file=sys.stderr)
        return 2


def _check_args(args: argparse.Namespace) -> None:
    """Cheap checks first, before the model (and NeMo) load."""
    if not Path(args.model).exists():  # a file, or a save_pretrained folder
        raise FileNotFoundError(f"--model {args.model!r} does not exist")
    for name in ("text_file", "reference", "manifest"):
        value = getattr(args, name)
        if value is not None and not Path(value).is_file():
            raise FileNotFoundError(f"--{name.replace('_', '-')} {value!r} does not exist")
    if args.shar is not None and not Path(args.shar).is_dir():
        raise FileNotFoundError(f"--shar {args.shar!r} is not a folder")
    if (args.text or args.text_file or args.audio) and args.source_lang is None:
        raise ValueError("give --source-lang")
    needs_target = args.text or args.text_file or (args.audio and args.task == "st")
    if needs_target and args.target_lang is None:
        raise ValueError("give --target-lang")
    if args.scores_json is not None and (args.text or args.text_file or args.audio) and args.reference is None:
        raise ValueError("--scores-json needs references to score against: give --reference")


def run(args: argparse.Namespace) -> int:
    from nemo.utils import logging as nemo_logging

    nemo_logging.setLevel(logging.WARNING)  # NeMo logs INFO to stdout, where the hypotheses go

    import torch

    from nemo_emmett import inference
    from nemo_emmett.data.examples import direction_key, parse_direction
    from nemo_emmett.export import load_model

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    directions = input_directions(args)
    model = load_model(args.model, map_location=device, model_class=args.model_class, directions=directions,
                       merge_lora=True)  # adapters merged: the same outputs, no extra matmuls
    for key in directions or ():  # a language the model never saw is an error, not empty output
        inference.check_direction(model, *parse_direction(key))
    if args.beam_size is not None:
        model.cfg.decoding.beam_size = args.beam_size
    if args.max_new_tokens is not None:
        model.cfg.decoding.max_new_tokens = args.max_new_tokens
    common = {"batch_size": args.batch_size, "progress": not args.no_progress}
    refs: list[str] | None = None
    if args.text or args.text_file:
        lines = args.text or _read_lines(args.text_file)
        hyps = inference.translate_texts(model, lines, args.source_lang, args.target_lang, **common)
        keys = [direction_key("mt", args.source_lang, args.target_lang)] * len(hyps)
    elif args.audio:
        hyps = inference.translate_audio(model, args.audio, args.source_lang, args.target_lang, task=args.task,
                                         **common)
        target = args.source_lang if args.task == "asr" else args.target_lang
        keys = [direction_key(args.task, args.source_lang, target)] * len(hyps)
    elif args.shar:
        hyps, refs, keys = inference.translate_shar(model, args.shar, **common)
    else:
        hyps, refs, keys = inference.translate_manifest(model, args.manifest, task=args.task,
                                                        source_lang=args.source_lang,
                                                        target_lang=args.target_lang, **common)
    if args.reference is not None:
        refs = _read_lines(args.reference)
        if len(refs) != len(hyps):
            raise ValueError(f"--reference {args.reference!r} has {len(refs)} lines for {len(hyps)} inputs")
    text = "".join(h.replace("\r", " ").replace("\n", " ") + "\n" for h in hyps)
    if args.output is not None:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    if refs is not None:
        scores = inference.score(hyps, refs, keys)
        report = inference.format_scores(scores, keys)
        print(report, file=sys.stdout if args.output is not None else sys.stderr)
        if args.scores_json is not None:
            import json

            Path(args.scores_json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.scores_json).write_text(json.dumps(inference.scores_record(scores, keys), indent=1) + "\n")
    elif args.scores_json is not None:
        raise ValueError("--scores-json needs references: give --reference, or --shar / --manifest with targets")
    return 0


def input_directions(args: argparse.Namespace) -> list[str] | None:
    """The directions (``mt:en-de``) the input needs, so that a modular model loads only their
    components; None (everything) for a manifest, whose rows may name their own languages."""
    from nemo_emmett.data.examples import direction_key

    if args.text or args.text_file:
        return [direction_key("mt", args.source_lang, args.target_lang)]
    if args.audio:
        target = args.source_lang if args.task == "asr" else args.target_lang
        return [direction_key(args.task, args.source_lang, target)]
    if args.shar:
        import nemo_emmett.data.examples as ex_
        from nemo_emmett.data.shar import read_shar_dir

        return sorted({ex_.direction(e) for e in read_shar_dir(args.shar, with_audio=False)})
    return None


def _read_lines(path: str) -> list[str]:
    """Lines split at newlines only (``str.splitlines`` would also split at U+2028 and friends)."""
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
