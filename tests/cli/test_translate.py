"""Inference API (nemo_emmett.inference) and examples/translate.py on a tiny exported model."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from nemo_emmett import inference
from nemo_emmett.data.prepare.tokenizer import train_sentencepiece
from nemo_emmett.data.shar import read_shar_dir
from nemo_emmett.export import export_model
from nemo_emmett.parts.metrics import score_signatures, signature_text
from tests.conftest import LINES, write_audio_source, write_text_source
from tests.test_export import tiny_model

REPO = Path(__file__).resolve().parents[2]
SIGNATURE_LINE = signature_text(["de"])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("translate")
    spm = train_sentencepiece(LINES * 3, vocab_size=60, key={"test": "translate"}, out_dir=root / "spm",
                              user_defined_symbols=["<de>", "<en>"])
    model = tiny_model(spm)
    rng = np.random.default_rng(0)
    wavs = []
    for i, rate in enumerate((22050, 16000)):  # 22.05 kHz: resampled to the model's 16 kHz
        wavs.append(root / f"speech{i}.wav")
        sf.write(wavs[-1], (0.1 * rng.standard_normal(int(rate * (0.8 + 0.4 * i)))).astype("float32"), rate)
    return SimpleNamespace(model=model, path=export_model(model, root / "tiny.emmett"), wavs=wavs, root=root)


def echo_targets(record=None):
    """A stand-in for ``translate_batch``: returns what the model should have produced."""
    def translate_batch(batch):
        if record is not None:
            record.append(batch)
        return list(batch.target_texts if batch.target_texts[0] else batch.source_texts)
    return translate_batch


def test_batches_are_length_sorted_and_results_in_input_order(tiny, monkeypatch):
    batches = []
    monkeypatch.setattr(tiny.model, "translate_batch", echo_targets(batches))
    lines = ["a" * n for n in (3, 9, 1, 7, 7, 2, 12, 5, 4, 10)]
    assert inference.translate_texts(tiny.model, lines, "en", "de", batch_size=3, progress=False) == lines
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    order = [len(s) for b in batches for s in b.source_texts]
    assert order == sorted(order, reverse=True)
    assert all(b.target_langs == ["de"] * len(b) and b.modality == "text" for b in batches)


def test_translate_shar_carries_refs_and_directions_and_scores(tiny, tmp_path, monkeypatch):
    batches = []
    monkeypatch.setattr(tiny.model, "translate_batch", echo_targets(batches))
    text = write_text_source(tmp_path / "mt", "mt", 7, src="en", tgt="fr", max_words=5)
    speech = write_audio_source(tmp_path / "st", "st", 3, sampling_rate=8000)
    for folder, n, key in ((text, 7, "mt:en-fr"), (speech, 3, "st:en-de")):
        hyps, refs, keys = inference.translate_shar(tiny.model, folder, batch_size=2, progress=False)
        assert hyps == refs and len(refs) == n and keys == [key] * n
        scores = inference.score(hyps, refs, keys)
        assert scores[f"bleu/{key}"] == pytest.approx(100.0) and scores[f"chrf/{key}"] == pytest.approx(100.0)
    audio = [b for b in batches if b.modality == "audio"]
    assert audio and all(b.audio.shape[0] == len(b) for b in audio)
    # 8 kHz recordings reach the model at its 16 kHz
    durations = [c.duration for c in read_shar_dir(speech, with_audio=False)]
    assert sum(int(b.audio_lens.sum()) for b in audio) == pytest.approx(16000 * sum(durations), abs=3)


def test_audio_and_manifest_inputs(tiny, tmp_path):
    hyps = inference.translate_audio(tiny.model, tiny.wavs, "en", "de", progress=False)
    assert len(hyps) == 2 and any(hyps)
    assert inference.translate_audio(tiny.model, tiny.wavs[::-1], "en", "de", progress=False) == hyps[::-1]
    manifest = tmp_path / "test.json"
    manifest.write_text("".join(json.dumps({"audio_filepath": str(p), "text": "two", "answer": "zwei"}) + "\n"
                                for p in tiny.wavs))
    m_hyps, refs, keys = inference.translate_manifest(tiny.model, manifest, source_lang="en", target_lang="de",
                                                      progress=False)
    assert m_hyps == hyps and refs == ["zwei", "zwei"] and keys == ["st:en-de"] * 2
    _, asr_refs, asr_keys = inference.translate_manifest(tiny.model, manifest, task="asr", source_lang="en",
                                                         progress=False)
    assert asr_refs == ["two", "two"] and asr_keys == ["asr:en-en"] * 2

    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all" * 10)
    with pytest.raises(ValueError, match=r"bad\.wav"):
        inference.translate_audio(tiny.model, [tiny.wavs[0], bad], "en", "de", progress=False)
    with pytest.raises(FileNotFoundError, match=r"gone\.wav"):
        inference.translate_audio(tiny.model, [tmp_path / "gone.wav"], "en", "de", progress=False)


def run_cli(args, tmp_path):
    env = {**os.environ, "NEMO_EMMETT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(REPO / "examples/translate.py"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)


def test_cli_translates_text_and_scores(tiny, tmp_path):
    lines = ["three hundred and nine", "two"]
    (tmp_path / "ref.de").write_text("dreihundertneun\nzwei\n")
    proc = run_cli(["--model", str(tiny.path), "--text", lines[0], "--text", lines[1], "--source-lang", "en",
                    "--target-lang", "de", "--reference", "ref.de", "--no-progress"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = inference.translate_texts(tiny.model, lines, "en", "de", progress=False)
    assert proc.stdout.split("\n") == [*expected, ""]
    assert "mt:en-de  n=2  BLEU " in proc.stderr and "chrF" in proc.stderr
    assert SIGNATURE_LINE in proc.stderr  # the scores carry sacrebleu's signatures


def test_cli_translates_audio_to_a_file(tiny, tmp_path):
    (tmp_path / "ref.de").write_text("zwei\ndrei\n")
    proc = run_cli(["--model", str(tiny.path), *(a for w in tiny.wavs for a in ("--audio", str(w))),
                    "--source-lang", "en", "--target-lang", "de", "--output", "out/hyps.de",
                    "--reference", "ref.de", "--beam-size", "2", "--scores-json", "out/scores.json"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tiny.model.cfg.decoding.beam_size = 2
    try:
        expected = inference.translate_audio(tiny.model, tiny.wavs, "en", "de", progress=False)
    finally:
        tiny.model.cfg.decoding.beam_size = 1
    assert (tmp_path / "out/hyps.de").read_text().split("\n") == [*expected, ""]
    assert proc.stdout.startswith("st:en-de  n=2  BLEU ")
    assert proc.stdout.splitlines()[-1] == SIGNATURE_LINE
    record = json.loads((tmp_path / "out/scores.json").read_text())
    assert record["counts"] == {"st:en-de": 2} and set(record["scores"]) >= {"bleu/st:en-de", "chrf/st:en-de"}
    assert record["signatures"] == score_signatures(["de"])
    assert record["signatures"]["bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")


def test_cli_errors_are_one_line_with_exit_status_2(tmp_path):
    proc = run_cli(["--model", str(tmp_path / "missing.emmett"), "--text", "x", "--source-lang", "en",
                    "--target-lang", "de"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"emmett-translate: error: --model '{tmp_path / 'missing.emmett'}' "
                                                "does not exist"]


def test_printed_and_recorded_scores_carry_their_signatures():
    keys = ["st:en-de", "st:en-de", "mt:en-zh"]
    scores = inference.score(["zwei", "drei", "猫坐在垫子上"], ["zwei", "vier", "猫坐在垫子上"], keys)
    report = inference.format_scores(scores, keys).splitlines()
    assert report[0].startswith("mt:en-zh  n=1  BLEU ") and report[1].startswith("st:en-de  n=2  BLEU ")
    assert report[-1] == signature_text(["de", "zh"]) and "tok:zh" in report[-1] and "tok:13a" in report[-1]
    record = inference.scores_record(scores, keys)
    assert record["counts"] == {"mt:en-zh": 1, "st:en-de": 2}
    assert record["signatures"] == score_signatures(["de", "zh"]) and record["scores"] == dict(sorted(scores.items()))
    json.dumps(record)  # JSON-ready
    assert inference.format_scores({}, []) == ""  # nothing scored: no signature line either
