"""Failure cases of data preparation (issue #14): what a broken input or an interrupted run leaves, and
what the readers make of it. One test per case; each asserts that the culprit is named or the drop counted.
The kill itself (SIGKILL of a real ``emmett-prepare``) is ``test_prepare_kill.py``."""

from __future__ import annotations

import gzip
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from nemo_emmett.data import examples as E
from nemo_emmett.data.dataset import collate
from nemo_emmett.data.marker import IncompleteSharError, marker_path
from nemo_emmett.data.plan import resolve_sources
from nemo_emmett.data.prepare import speech as speech_mod
from nemo_emmett.data.prepare.bitext import (
    BitextOptions,
    ManifestOptions,
    TsvOptions,
    prepare_audio,
    prepare_bitext,
)
from nemo_emmett.data.prepare.cli import main
from nemo_emmett.data.prepare.output import PrepareOptions
from nemo_emmett.data.prepare.speech import SpeechOptions, prepare_speech
from nemo_emmett.data.sampler import Batch
from nemo_emmett.data.shar import count_examples, read_shar_dir

EN = ["a small dog", "two men talk", "the red house"]
DE = ["ein kleiner Hund", "zwei Männer reden", "das rote Haus"]


def write_lines(path: Path, lines: list[str], *, prefix: bytes = b"") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = prefix + "".join(line + "\n" for line in lines).encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return str(path)


def opts(tmp_path: Path, dataset: str = "toy", **kw) -> PrepareOptions:
    return PrepareOptions(dataset=dataset, out_dir=str(tmp_path / "out"), progress=False, **kw)


def bitext(tmp_path: Path, pairs=(("en", "de"),), suffix: str = "") -> BitextOptions:
    return BitextOptions(f"{tmp_path}/c/train.{{src_lang}}{suffix}", f"{tmp_path}/c/train.{{tgt_lang}}{suffix}",
                         pairs=list(pairs))


def source(path: Path) -> dict:
    return {"name": "s", "path": str(path), "task": "mt", "source_lang": "en", "target_lang": "de"}


def wav(path: Path, audio: np.ndarray, sr: int = 16000) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio.astype("float32"), sr)
    return str(path)


def manifest(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


# 1. A direction is complete (marker, final name) as soon as it is done, whatever happens to the next one.
def test_each_direction_is_in_place_before_the_next_starts(tmp_path):
    write_lines(tmp_path / "c/train.en", EN)
    write_lines(tmp_path / "c/train.de", DE)
    (tmp_path / "c/train.fr").write_bytes(b"un\ndeux\n\xff\n")  # the second direction fails at line 3
    with pytest.raises(ValueError, match=r"train\.fr:3: not valid UTF-8"):
        prepare_bitext(bitext(tmp_path, [("en", "de"), ("en", "fr")]), opts(tmp_path))
    out = tmp_path / "out/toy"
    assert count_examples(out / "mt_en-de") == 3  # complete and readable
    assert sorted(p.name for p in out.iterdir()) == ["mt_en-de", "mt_en-de.complete.json"]  # no partial left


# 2. A folder without its marker (a killed run, or written before markers) is refused, naming it and the fix.
def test_reader_refuses_a_folder_without_marker(tmp_path, caplog):
    write_lines(tmp_path / "c/train.en", EN)
    write_lines(tmp_path / "c/train.de", DE)
    prepare_bitext(bitext(tmp_path), opts(tmp_path))
    folder = tmp_path / "out/toy/mt_en-de"
    marker_path(folder).unlink()
    for read in (count_examples, lambda p: list(read_shar_dir(p)), lambda p: resolve_sources([source(p)], "train")):
        with pytest.raises(IncompleteSharError, match=rf"'{folder}' is incomplete: .*mt_en-de\.complete\.json.* "
                                                      r"is missing.*re-run emmett-prepare.*allow_incomplete"):
            read(folder)
    with caplog.at_level(logging.WARNING):  # the way around: a warning, and the folder as it is
        [spec] = resolve_sources([source(folder)], "train", allow_incomplete=True)
    assert spec.num_examples == 3 and f"'{folder}' is incomplete" in caplog.text


# 3. Shards that disagree with the marker (truncated, replaced, added) are refused, naming the file.
def test_reader_refuses_shards_that_disagree_with_the_marker(tmp_path):
    write_lines(tmp_path / "c/train.en", EN)
    write_lines(tmp_path / "c/train.de", DE)
    prepare_bitext(bitext(tmp_path), opts(tmp_path, shard_size=2))
    folder = tmp_path / "out/toy/mt_en-de"
    shard = folder / "text.000001.jsonl.gz"
    shard.write_bytes(shard.read_bytes()[:-5])
    with pytest.raises(IncompleteSharError, match=r"text\.000001\.jsonl\.gz has \d+ bytes, the marker says \d+"):
        count_examples(folder)
    shutil.copy(folder / "text.000000.jsonl.gz", folder / "text.000002.jsonl.gz")
    with pytest.raises(IncompleteSharError, match=r"shard\(s\) \['text\.000002\.jsonl\.gz'\] are not in the marker"):
        count_examples(folder)


# 4. A re-run without --overwrite keeps complete folders (logged) and redoes unfinished ones, before any synthesis.
def test_rerun_skips_complete_folders_without_synthesis_and_redoes_partial_ones(tmp_path, monkeypatch, caplog):
    write_lines(tmp_path / "c/train.en", EN)
    write_lines(tmp_path / "c/train.de", DE)
    speech = SpeechOptions(src_template=f"{tmp_path}/c/train.{{src_lang}}", tgt_template=f"{tmp_path}/c/train.{{tgt_lang}}",
                           pairs=[("en", "de")])
    clip = wav(tmp_path / "clip.wav", 0.1 * np.ones(1600))
    spoken = []

    def fake_synthesis(jobs, **kw):
        spoken.extend(j.key for j in jobs)
        return {j.key: Path(clip).read_bytes() for j in jobs}

    monkeypatch.setattr(speech_mod, "synthesize_many", fake_synthesis)
    prepare_speech(speech, opts(tmp_path))
    assert len(spoken) == 3
    root = tmp_path / "out/toy"
    shutil.rmtree(root / "asr_en-en")  # as if killed while writing it: only its partial folder is left
    marker_path(root / "asr_en-en").unlink()
    (root / "asr_en-en.partial-99999").mkdir()
    (root / "asr_en-en.partial-99999/cuts.000000.jsonl.gz").write_bytes(b"")
    spoken.clear()
    with caplog.at_level(logging.INFO):
        summaries = prepare_speech(speech, opts(tmp_path))
    assert "Skipping" in caplog.text and "st_en-de" in caplog.text and "asr_en-en.partial-99999" in caplog.text
    assert len(spoken) == 3 and not (root / "asr_en-en.partial-99999").exists()
    assert {s.name: s.num_examples for s in summaries} == {"toy_st_en-de": 3, "toy_asr_en-en": 3}
    spoken.clear()
    prepare_speech(speech, opts(tmp_path))  # everything complete: nothing is spoken
    assert spoken == []
    assert count_examples(root / "asr_en-en") == count_examples(root / "st_en-de") == 3


# 5. A folder under its final name without a marker (an older version's, or someone else's): not replaced silently.
def test_unmarked_existing_folder_needs_overwrite(tmp_path):
    write_lines(tmp_path / "c/train.en", EN)
    write_lines(tmp_path / "c/train.de", DE)
    prepare_bitext(bitext(tmp_path), opts(tmp_path))
    folder = tmp_path / "out/toy/mt_en-de"
    marker_path(folder).unlink()
    with pytest.raises(FileExistsError, match=rf"'{folder}' exists but is not complete.*--overwrite"):
        prepare_bitext(bitext(tmp_path), opts(tmp_path))
    prepare_bitext(bitext(tmp_path), opts(tmp_path, overwrite=True))
    assert count_examples(folder) == 3


# 6. A WAV with 0 samples used to pass preparation and crash training when drawn: dropped, counted, named.
def test_empty_wav_is_dropped_counted_and_named(tmp_path, caplog):
    good = wav(tmp_path / "wav/a.wav", 0.1 * np.ones(8000))
    empty = wav(tmp_path / "wav/empty.wav", np.zeros(0))
    m = manifest(tmp_path / "m.json", [{"audio_filepath": good, "text": "hi"}, {"audio_filepath": empty, "text": "ho"}])
    with caplog.at_level(logging.WARNING):
        [s] = prepare_audio(ManifestOptions(m, source_lang="en"), opts(tmp_path))
    assert (s.num_examples, s.dropped, s.dropped_by_reason) == (1, 1, {"empty_audio": 1})
    assert f"{m}:2" in caplog.text and empty in caplog.text
    folder = tmp_path / "out/toy/asr_en-en"
    assert json.loads(marker_path(folder).read_text())["skipped"] == {"empty_audio": 1}
    assert [c.duration for c in read_shar_dir(folder)] == [0.5]


# 7. Stereo audio kept channel 0 without a word: now the mean of the channels, warned once and counted.
def test_stereo_audio_is_downmixed_warned_once_and_counted(tmp_path, caplog):
    left, right = np.full(4000, 0.2), np.full(4000, -0.1)
    paths = [wav(tmp_path / f"wav/s{i}.wav", np.stack([left, right], axis=1)) for i in range(2)]
    m = manifest(tmp_path / "m.json", [{"audio_filepath": p, "text": "hi"} for p in paths])
    with caplog.at_level(logging.WARNING):
        [s] = prepare_audio(ManifestOptions(m, source_lang="en"), opts(tmp_path))
    assert s.downmixed == 2
    assert caplog.text.count("has 2 channels") == 1 and paths[0] in caplog.text
    assert "2 multi-channel audio file(s)" in caplog.text
    for cut in read_shar_dir(tmp_path / "out/toy/asr_en-en"):
        audio = cut.load_audio()
        assert audio.shape == (1, 4000) and np.allclose(audio, 0.05, atol=1e-4)


# 8. (good) Another sampling rate is kept at preparation and resampled when batches are made.
def test_other_sampling_rate_is_resampled_on_loading(tmp_path):
    m = manifest(tmp_path / "m.json", [{"audio_filepath": wav(tmp_path / "a.wav", 0.1 * np.ones(8000), sr=8000),
                                        "text": "hi"}])
    prepare_audio(ManifestOptions(m, source_lang="en"), opts(tmp_path))
    [cut] = read_shar_dir(tmp_path / "out/toy/asr_en-en")
    assert cut.sampling_rate == 8000
    batch = collate(Batch("audio", 0, 20.0, 2.0, [cut], [(12.5, 1.0)]), sampling_rate=16000)
    assert tuple(batch.audio.shape) == (1, 16000)


# 9. (good) An unreadable audio file names the manifest line and the file.
def test_unreadable_audio_is_named(tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"RIFF not really")
    m = manifest(tmp_path / "m.json", [{"audio_filepath": str(tmp_path / "bad.wav"), "text": "hi"}])
    with pytest.raises(ValueError, match=rf"{m}:1: cannot read audio '{tmp_path}/bad\.wav'"):
        prepare_audio(ManifestOptions(m, source_lang="en"), opts(tmp_path))
    assert not list((tmp_path / "out/toy").glob("*"))  # nothing half-written left behind


# 10. A broken .gz (truncated, bad CRC, not gzip at all) used to fail without naming any file.
@pytest.mark.parametrize("damage", ["truncated", "crc", "not_gzip"])
def test_broken_gzip_input_is_named(tmp_path, damage):
    write_lines(tmp_path / "c/train.en.gz", EN * 50)
    de = tmp_path / "c/train.de.gz"
    write_lines(de, DE * 50)
    data = de.read_bytes()
    de.write_bytes({"truncated": data[: len(data) // 2], "crc": data[:-8] + bytes(8), "not_gzip": b"plain text\n"}[damage])
    with pytest.raises(ValueError, match=rf"{de}: cannot read it after line \d+ .*expected a complete, valid gzip file"):
        prepare_bitext(bitext(tmp_path, suffix=".gz"), opts(tmp_path))


# 11. A UTF-8 byte order mark stayed in the first example (and in a tsv's first column name): stripped.
def test_utf8_bom_is_stripped(tmp_path):
    write_lines(tmp_path / "c/train.en", EN, prefix="\ufeff".encode())
    write_lines(tmp_path / "c/train.de", DE, prefix="\ufeff".encode())
    prepare_bitext(bitext(tmp_path), opts(tmp_path))
    first = next(iter(read_shar_dir(tmp_path / "out/toy/mt_en-de")))
    assert (E.source_text(first), E.target_text(first)) == ("a small dog", "ein kleiner Hund")
    tsv = tmp_path / "t.tsv"
    tsv.write_text("\ufeffaudio\ttranscript\n" + wav(tmp_path / "a.wav", 0.1 * np.ones(1600)) + "\thello\n")
    [s] = prepare_audio(TsvOptions(str(tsv), source_lang="en"), opts(tmp_path, dataset="tsv"))
    assert s.num_examples == 1


# 12. Blank and whitespace-only lines: an error naming file:line by default (good); with skip, counted per reason.
def test_blank_and_whitespace_lines_are_counted_per_reason(tmp_path):
    write_lines(tmp_path / "c/train.en", ["one", "   ", "three", "four"])
    write_lines(tmp_path / "c/train.de", ["eins", "zwei", "", "vier"])
    with pytest.raises(ValueError, match=rf"{tmp_path}/c/train\.en:2: empty source or target"):
        prepare_bitext(bitext(tmp_path), opts(tmp_path))
    [s] = prepare_bitext(bitext(tmp_path), opts(tmp_path, empty_lines="skip"))
    assert (s.num_examples, s.dropped, s.dropped_by_reason) == (2, 2, {"empty_text": 2})
    assert s.drop_locations == [f"{tmp_path}/c/train.en:2", f"{tmp_path}/c/train.de:3"]
    summary = json.loads((tmp_path / "out/toy/summary.json").read_text())["folders"][0]
    assert summary["dropped_by_reason"] == {"empty_text": 2}
    assert json.loads(marker_path(tmp_path / "out/toy/mt_en-de").read_text())["skipped"] == {"empty_text": 2}


# 13. (good) Source and target files of different lengths: an error naming both files and both counts.
def test_mismatched_line_counts_name_both_files(tmp_path):
    en = write_lines(tmp_path / "c/train.en", EN)
    de = write_lines(tmp_path / "c/train.de", DE[:2])
    with pytest.raises(ValueError, match=rf"'{en}' has 3 lines, '{de}' has 2"):
        prepare_bitext(bitext(tmp_path), opts(tmp_path))
    assert not (tmp_path / "out").exists()


# 14. A language code like 'Deutsch!!' became a folder name: refused, naming the value and what is expected.
def test_bad_language_code_is_refused(tmp_path, capsys):
    write_lines(tmp_path / "c/train.en", EN)
    with pytest.raises(SystemExit):
        main(["bitext", "--src-template", f"{tmp_path}/c/train.{{src_lang}}", "--tgt-template",
              f"{tmp_path}/c/train.{{tgt_lang}}", "--pairs", "en-Deutsch!!", "--dataset", "toy", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert "'Deutsch!!' is not a language code" in err and "ISO 639" in err
    with pytest.raises(ValueError, match=r"direction en-Deutsch!!: target 'Deutsch!!' is not a language code"):
        prepare_bitext(bitext(tmp_path, [("en", "Deutsch!!")]), opts(tmp_path))
    m = manifest(tmp_path / "m.json", [{"audio_filepath": "a.wav", "text": "hi", "source_lang": "English"}])
    with pytest.raises(ValueError, match=rf"{m}:1: source_lang 'English' is not a language code"):
        prepare_audio(ManifestOptions(m), opts(tmp_path))
    assert not (tmp_path / "toy").exists() and not (tmp_path / "out").exists()


# 15. The demo corpus writes markers; a cache of the version before them is rebuilt (a new key), not refused.
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_demo_corpus_has_markers_and_old_caches_are_rebuilt(tmp_path, monkeypatch):
    from nemo_emmett.data.prepare import demo

    clip = Path(wav(tmp_path / "clip.wav", 0.1 * np.ones(1600))).read_bytes()
    monkeypatch.setattr(demo, "synthesize_many", lambda jobs, **kw: {j.key: clip for j in jobs})
    monkeypatch.setenv("NEMO_EMMETT_CACHE", str(tmp_path / "cache"))
    cfg = demo.DemoCorpusConfig(num_train=4, num_val=2, num_mt_train=4, max_number=20, languages=("en", "de"))
    current = demo.CORPUS_VERSION
    corpus = demo.build_demo_corpus(cfg)
    assert current >= 2 and corpus.root.name == demo.corpus_key(cfg, demo.espeak_version(demo.require_espeak()))
    for split in demo.SPLITS:
        for spec in corpus.sources[split]:
            assert count_examples(spec["path"]) == spec["num_examples"]  # strict: its marker is there
    monkeypatch.setattr(demo, "CORPUS_VERSION", 1)  # the cache a version-1 build left (no markers)
    old = demo.build_demo_corpus(cfg).root
    for p in old.rglob("*.complete.json"):
        p.unlink()
    monkeypatch.setattr(demo, "CORPUS_VERSION", current)
    again = demo.build_demo_corpus(cfg)
    assert again.root == corpus.root != old  # the old cache is left alone, never read
    assert all(count_examples(s["path"]) for s in again.sources["train"])
