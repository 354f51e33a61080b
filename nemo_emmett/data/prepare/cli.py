"""``emmett-prepare`` / ``examples/prepare_data.py``: corpora -> Shar folders, a summary and a sources list.

    emmett-prepare bitext --src-template 'data/{lang_pair}/train.{src_lang}' \\
        --tgt-template 'data/{lang_pair}/train.{tgt_lang}' --pairs en-de,en-fr --dataset wmt --out shar/
    emmett-prepare bitext --src-template 'train.{src_lang}.gz' --tgt-template 'train.{tgt_lang}.gz' \\
        --langs en,de,fr,cs --all-pairs --dataset multi30k --out shar/
    emmett-prepare manifest --manifest train.json --source-lang en --target-lang de --dataset covost --out shar/
    emmett-prepare tsv --tsv train.tsv --dataset mydata --out shar/
    emmett-prepare speech --src-template 'train.{src_lang}.gz' --tgt-template 'train.{tgt_lang}.gz' \
        --pairs en-de,en-fr --max-lines 5000 --dataset multi30k_speech --out shar/

Input errors print one line (no traceback) and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from nemo_emmett.data.prepare.bitext import (
    BitextOptions,
    ManifestOptions,
    TsvOptions,
    prepare_audio,
    prepare_bitext,
)
from nemo_emmett.data.prepare.output import FolderSummary, PrepareOptions
from nemo_emmett.data.prepare.speech import SpeechOptions, prepare_speech
from nemo_emmett.data.prepare.templates import MODES, discover_pairs, parse_pairs

PROG = "emmett-prepare"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Convert corpora into Shar folders for nemo_emmett.")
    sub = parser.add_subparsers(dest="layout", required=True, metavar="{bitext,manifest,tsv,speech}")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dataset", required=True, help="dataset name: output subfolder and tag of every example")
    common.add_argument("--out", required=True, help="output root; writes <out>/<dataset>/<task>_<src>-<tgt>/")
    common.add_argument("--shard-size", type=_positive, help=f"examples per shard (default {PrepareOptions.shard_size})")
    common.add_argument("--empty-lines", choices=("error", "skip"),
                        help=f"an empty source or target: stop, or drop and count it (default {PrepareOptions.empty_lines})")
    common.add_argument("--max-lines", type=_positive, help="read at most N lines of each input file")
    common.add_argument("--tokenizer", help="SentencePiece .model: report its token counts instead of words")
    common.add_argument("--overwrite", action="store_true",
                        help="prepare complete output folders again (without it they are skipped, and "
                             "unfinished ones are redone)")
    common.add_argument("--no-progress", action="store_true", help="no progress bar")

    bitext = sub.add_parser("bitext", parents=[common], help="line-aligned text files (plain or .gz)")
    bitext.add_argument("--src-template", required=True,
                        help="source file (symmetric mode: side_a file); variables {src_lang} {tgt_lang} "
                             "{lang_pair} {sorted_pair} {side_a} {side_b}")
    bitext.add_argument("--tgt-template", required=True, help="target file (symmetric mode: side_b file)")
    bitext.add_argument("--mode", choices=MODES, default=BitextOptions.mode,
                        help="directional: files per direction; symmetric: one corpus per unordered pair")
    which = bitext.add_mutually_exclusive_group(required=True)
    which.add_argument("--pairs", help="directions to prepare, e.g. en-de,en-fr")
    which.add_argument("--all-pairs", action="store_true", help="every direction among --langs whose files exist")
    bitext.add_argument("--langs", help="languages for --all-pairs, e.g. en,de,fr")

    speech = sub.add_parser("speech", parents=[common],
                            help="synthesise the source side of a bitext with espeak-ng: ST (and ASR) folders")
    speech.add_argument("--src-template", required=True, help="file of the spoken language, e.g. 'train.{src_lang}.gz'")
    speech.add_argument("--tgt-template", required=True, help="translation files, e.g. 'train.{tgt_lang}.gz'")
    speech.add_argument("--pairs", required=True, help="directions from the spoken language, e.g. en-de,en-fr")
    speech.add_argument("--no-asr", action="store_true", help="no ASR folder (target = the spoken line)")
    speech.add_argument("--voices", help="comma-separated espeak-ng voices (default en-us,en-gb,en-gb-x-rp)")
    speech.add_argument("--seed", type=int, help="seed of the per-line voice, speed and pitch")
    speech.add_argument("--chunk-size", type=_positive,
                        help=f"lines synthesised per round: bounds the audio held in memory (default {SpeechOptions.chunk_size})")

    for name, cls in (("manifest", ManifestOptions), ("tsv", TsvOptions)):
        what = "field" if name == "manifest" else "column"
        p = sub.add_parser(name, parents=[common], help="NeMo JSON manifest" if name == "manifest"
                           else "tab-separated file with a header row and audio paths")
        p.add_argument(f"--{name}", required=True, dest="path", help=f"the {name} file")
        for key in ("audio_key", "transcript_key", "source_lang_key", "target_lang_key"):
            flag = f"--{key.removesuffix('_key').replace('_', '-')}-{what}"
            p.add_argument(flag, dest=key, help=f"(default {getattr(cls, key)!r})")
        flag = "--target-field" if name == "manifest" else "--translation-column"
        p.add_argument(flag, dest="translation_keys", action="append",
                       help=f"translation {what}, repeatable; none present means ASR (default {cls.translation_keys})")
        p.add_argument("--source-lang", help=f"source language where the {what} is absent")
        p.add_argument("--target-lang", help=f"target language where the {what} is absent")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        opts = PrepareOptions(**_given(args, "dataset", "shard_size", "empty_lines", "max_lines", "tokenizer",
                                       "overwrite"), out_dir=args.out, progress=not args.no_progress)
        if args.layout == "bitext":
            summaries = prepare_bitext(_bitext_options(args), opts)
        elif args.layout == "speech":
            voices = {"voices": args.voices.split(",")} if args.voices else {}
            summaries = prepare_speech(SpeechOptions(src_template=args.src_template, tgt_template=args.tgt_template,
                                                     pairs=parse_pairs(args.pairs), asr=not args.no_asr,
                                                     **voices, **_given(args, "seed", "chunk_size")), opts)
        else:
            cls = ManifestOptions if args.layout == "manifest" else TsvOptions
            keys = ("path", "audio_key", "transcript_key", "source_lang_key", "target_lang_key",
                    "translation_keys", "source_lang", "target_lang")
            summaries = prepare_audio(cls(**_given(args, *keys)), opts)
    except (ValueError, OSError, RuntimeError) as e:
        parser.exit(2, f"{PROG}: error: {' '.join(str(e).split())}\n")
    root = f"{args.out.rstrip('/')}/{args.dataset}"
    print(format_summary(summaries))
    print(f"wrote {root}/summary.json and {root}/sources.yaml")
    return 0


def format_summary(summaries: list[FolderSummary]) -> str:
    """A plain-text table, one row per output folder."""
    head = ("folder", "examples", "dropped", "hours", "src tokens", "tgt tokens", "unit")
    rows = [(s.name, str(s.num_examples), str(s.dropped), f"{s.hours:.3f}" if s.modality == "audio" else "-",
             str(s.source_tokens), str(s.target_tokens), s.token_unit) for s in summaries]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in [head, *rows])


def _bitext_options(args: argparse.Namespace) -> BitextOptions:
    langs = [x.strip() for x in (args.langs or "").split(",") if x.strip()]
    if args.pairs:
        pairs = parse_pairs(args.pairs)
        outside = sorted({lang for pair in pairs for lang in pair} - set(langs)) if langs else []
        if outside:
            raise ValueError(f"--pairs {args.pairs} uses language(s) {outside} that are not in --langs {args.langs}")
    else:
        if len(langs) < 2:
            raise ValueError("--all-pairs needs --langs with at least two languages, e.g. --langs en,de,fr")
        pairs = discover_pairs(args.src_template, args.tgt_template, langs, args.mode)
        if not pairs:
            raise ValueError(f"--all-pairs: no direction among {langs} has both files "
                             f"{args.src_template!r} and {args.tgt_template!r} ({args.mode} mode)")
    return BitextOptions(src_template=args.src_template, tgt_template=args.tgt_template, pairs=pairs, mode=args.mode)


def _given(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The options the user gave; the others keep the dataclass defaults (the one place they live)."""
    values = {n: getattr(args, n) for n in names}
    if values.get("translation_keys"):
        values["translation_keys"] = tuple(values["translation_keys"])
    return {n: v for n, v in values.items() if v is not None and v is not False}


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value
