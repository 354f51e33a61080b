"""Speech for the source side of a bitext, synthesised with espeak-ng: ST (and ASR) Shar folders.

Each source line is spoken once (seeded voice, speed and pitch per line) and shared by the ASR
folder and every ST direction: ``st_<src>-<tgt>`` holds the translation of the same line.
Turns a text corpus such as Multi30k into a speech translation corpus with real audio."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from lhotse import Recording
from tqdm import tqdm

import nemo_emmett.data.examples as E
from nemo_emmett.data.prepare.bitext import count_lines, read_bitext
from nemo_emmett.data.prepare.espeak import SpeechJob, synthesize_many
from nemo_emmett.data.prepare.output import DatasetOutput, FolderSummary, PrepareOptions
from nemo_emmett.data.prepare.templates import Pair, corpus_paths


@dataclass
class SpeechOptions:
    src_template: str
    tgt_template: str
    pairs: list[Pair]
    """Directions with the same source language, e.g. [("en", "de"), ("en", "fr")]."""
    asr: bool = True
    """Also write ``asr_<src>-<src>`` (target = the spoken line)."""
    voices: list[str] = field(default_factory=lambda: ["en-us", "en-gb", "en-gb-x-rp"])
    speed_wpm: tuple[int, int] = (140, 180)
    pitch: tuple[int, int] = (40, 60)
    seed: int = 0
    sampling_rate: int = 16000
    num_workers: int = 2
    chunk_size: int = 1000
    """Lines synthesised per round (bounds the audio held in memory)."""


def prepare_speech(speech: SpeechOptions, opts: PrepareOptions) -> list[FolderSummary]:
    sources = {src for src, _ in speech.pairs}
    if len(sources) != 1:
        raise ValueError(f"speech: every pair must share one source language (the spoken one), got {speech.pairs}")
    (src,) = sources
    paths = corpus_paths(speech.src_template, speech.tgt_template, speech.pairs, "directional")
    src_path = paths[speech.pairs[0]][0]
    counts = {p: count_lines(p) for pair in paths.values() for p in pair}
    if len(set(counts.values())) != 1:
        raise ValueError(f"speech: files are not line-aligned: {counts}")
    targets = {tgt: tp for (_, tgt), (_, tp) in paths.items()}
    lines = _aligned_lines(src, src_path, targets, opts.max_lines)
    keys = ([("asr", src, src)] if speech.asr else []) + [("st", src, tgt) for tgt in targets]
    with DatasetOutput(opts) as out:
        todo = out.start(keys)  # before any synthesis: complete folders are skipped, not spoken again
        if todo:
            _speak_into(out, todo, speech, src, src_path, targets, lines, opts)
    return out.summaries


def _speak_into(out: DatasetOutput, todo: list[tuple[str, str, str]], speech: SpeechOptions, src: str,
                src_path: str, targets: dict[str, str], lines: list[tuple[int, dict[str, str]]],
                opts: PrepareOptions) -> None:
    """Synthesise ``lines`` chunk by chunk and write each clip into every folder of ``todo``."""
    # Lines with an empty side are counted (and reported) under the first ST folder written, or are an error.
    drop_key = next((k for k in todo if k[0] == "st"), todo[0])
    with tqdm(total=len(lines), desc=f"{opts.dataset} speech", unit="line", disable=not opts.progress) as bar:
        for start in range(0, len(lines), speech.chunk_size):
            chunk = lines[start : start + speech.chunk_size]
            jobs = []
            for lineno, text in chunk:
                if all(text.values()):
                    jobs.append(SpeechJob(lineno, text[src], *_voice(speech, lineno)))
                else:
                    out.drop_empty(drop_key, f"{src_path}:{lineno}")
            clips = synthesize_many(jobs, sampling_rate=speech.sampling_rate, num_workers=speech.num_workers,
                                    desc="espeak-ng") if jobs else {}
            for lineno, text in chunk:
                if lineno not in clips:
                    continue
                rec = Recording.from_bytes(clips[lineno], recording_id=f"{opts.dataset}-{src}-{lineno}")
                for task, _, tgt in todo:
                    target = text[src] if task == "asr" else text[tgt]
                    out.write(E.make_audio_example(
                        recording=rec, transcript=text[src], source_lang=src, target_text=target, target_lang=tgt,
                        task=task, dataset=opts.dataset, cut_id=f"{opts.dataset}-{task}-{src}-{tgt}-{lineno}",
                    ))
            bar.update(len(chunk))


def _aligned_lines(src: str, src_path: str, targets: dict[str, str],
                   max_lines: int | None) -> list[tuple[int, dict[str, str]]]:
    """``(lineno, {lang: text})`` with the source and every target language of each line."""
    rows: dict[int, dict[str, str]] = {}
    for tgt, tgt_path in targets.items():
        for lineno, s, t in read_bitext(src_path, tgt_path, max_lines):
            rows.setdefault(lineno, {src: s})[tgt] = t
    return sorted(rows.items())


def _voice(speech: SpeechOptions, lineno: int) -> tuple[str, int, int]:
    rng = random.Random(f"{speech.seed}:{lineno}")
    return rng.choice(speech.voices), rng.randint(*speech.speed_wpm), rng.randint(*speech.pitch)
