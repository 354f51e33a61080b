import gzip
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from nemo_emmett.data import examples as E
from nemo_emmett.data.prepare.bitext import (
    BitextOptions,
    ManifestOptions,
    PrepareOptions,
    TsvOptions,
    prepare_audio,
    prepare_bitext,
)
from nemo_emmett.data.prepare.cli import main
from nemo_emmett.data.shar import count_examples, list_shards, read_shar_dir
from nemo_emmett.data.sources import SourceSpec

MULTI30K = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "multi30k"
EN = ["a small dog", "two men talk", "the red house", "", "rain falls"]
DE = ["ein kleiner Hund", "zwei Männer reden", "das rote Haus", "nichts", "Regen fällt"]


def write_lines(path: Path, lines: list[str]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(line + "\n" for line in lines)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


def write_wav(path: Path, seconds: float, sr: int = 16000) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.1 * np.random.default_rng(0).standard_normal(int(seconds * sr))).astype("float32"), sr)
    return str(path)


def opts(tmp_path: Path, **kw) -> PrepareOptions:
    return PrepareOptions(dataset="toy", out_dir=str(tmp_path / "out"), progress=False, **kw)


def read_back(folder: Path) -> list:
    return list(read_shar_dir(folder))


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_bitext_round_trip(tmp_path, suffix):
    write_lines(tmp_path / f"c/train.en{suffix}", EN[:3])
    write_lines(tmp_path / f"c/train.de{suffix}", DE[:3])
    bitext = BitextOptions(f"{tmp_path}/c/train.{{src_lang}}{suffix}", f"{tmp_path}/c/train.{{tgt_lang}}{suffix}",
                           pairs=[("en", "de")])
    summaries = prepare_bitext(bitext, opts(tmp_path, shard_size=2))
    folder = tmp_path / "out/toy/mt_en-de"
    assert len(list_shards(folder)) == 2 and count_examples(folder) == 3
    exs = read_back(folder)
    assert [E.example_id(x) for x in exs] == ["toy-en-de-1", "toy-en-de-2", "toy-en-de-3"]
    assert [(E.source_text(x), E.target_text(x)) for x in exs] == list(zip(EN[:3], DE[:3]))
    assert {(E.source_lang(x), E.target_lang(x), E.task(x), E.dataset(x)) for x in exs} == {("en", "de", "mt", "toy")}
    [s] = summaries
    assert (s.num_examples, s.dropped, s.source_tokens, s.target_tokens) == (3, 0, 9, 9)


def test_symmetric_mode_yields_both_directions(tmp_path):
    write_lines(tmp_path / "de-en/train.de", DE[:3])
    write_lines(tmp_path / "de-en/train.en", EN[:3])
    bitext = BitextOptions(f"{tmp_path}/{{sorted_pair}}/train.{{side_a}}", f"{tmp_path}/{{sorted_pair}}/train.{{side_b}}",
                           pairs=[("en", "de"), ("de", "en")], mode="symmetric")
    prepare_bitext(bitext, opts(tmp_path))
    en_de = read_back(tmp_path / "out/toy/mt_en-de")
    de_en = read_back(tmp_path / "out/toy/mt_de-en")
    assert [(E.source_text(x), E.target_text(x), E.source_lang(x)) for x in en_de] == [(e, d, "en") for e, d in
                                                                                         zip(EN[:3], DE[:3])]
    assert [(E.source_text(x), E.target_text(x), E.source_lang(x)) for x in de_en] == [(d, e, "de") for e, d in
                                                                                         zip(EN[:3], DE[:3])]


def test_unequal_line_counts_name_both_files(tmp_path):
    src = write_lines(tmp_path / "train.en", EN[:3])
    tgt = write_lines(tmp_path / "train.de.gz", DE[:2])
    bitext = BitextOptions(f"{tmp_path}/train.{{src_lang}}", f"{tmp_path}/train.{{tgt_lang}}.gz", pairs=[("en", "de")])
    with pytest.raises(ValueError) as err:
        prepare_bitext(bitext, opts(tmp_path))
    assert f"{src!r} has 3 lines" in str(err.value) and f"{tgt!r} has 2" in str(err.value)
    assert not (tmp_path / "out").exists()  # checked before anything was written


def test_missing_file_is_named(tmp_path):
    write_lines(tmp_path / "train.en", EN[:3])
    bitext = BitextOptions(f"{tmp_path}/train.{{src_lang}}", f"{tmp_path}/train.{{tgt_lang}}", pairs=[("en", "de")])
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}/train.de"):
        prepare_bitext(bitext, opts(tmp_path))


def test_empty_line_errors_with_file_and_line(tmp_path):
    src = write_lines(tmp_path / "train.en", EN)
    write_lines(tmp_path / "train.de", DE)
    bitext = BitextOptions(f"{tmp_path}/train.{{src_lang}}", f"{tmp_path}/train.{{tgt_lang}}", pairs=[("en", "de")])
    with pytest.raises(ValueError, match=f"{src}:4: empty"):
        prepare_bitext(bitext, opts(tmp_path))


def test_empty_line_skip_counts_the_drop(tmp_path, caplog):
    src = write_lines(tmp_path / "train.en", EN)
    write_lines(tmp_path / "train.de", DE)
    bitext = BitextOptions(f"{tmp_path}/train.{{src_lang}}", f"{tmp_path}/train.{{tgt_lang}}", pairs=[("en", "de")])
    with caplog.at_level(logging.WARNING):
        prepare_bitext(bitext, opts(tmp_path, empty_lines="skip"))
    assert f"{src}:4" in caplog.text and "dropped 1" in caplog.text
    exs = read_back(tmp_path / "out/toy/mt_en-de")
    assert [E.example_id(x) for x in exs] == ["toy-en-de-1", "toy-en-de-2", "toy-en-de-3", "toy-en-de-5"]
    [folder] = json.loads((tmp_path / "out/toy/summary.json").read_text())["folders"]
    assert (folder["num_examples"], folder["dropped"], folder["drop_locations"]) == (4, 1, [f"{src}:4"])


def test_max_lines_and_existing_folder(tmp_path, caplog):
    write_lines(tmp_path / "train.en", EN)
    write_lines(tmp_path / "train.de", DE)
    bitext = BitextOptions(f"{tmp_path}/train.{{src_lang}}", f"{tmp_path}/train.{{tgt_lang}}", pairs=[("en", "de")])
    prepare_bitext(bitext, opts(tmp_path, max_lines=2))
    assert count_examples(tmp_path / "out/toy/mt_en-de") == 2
    with caplog.at_level(logging.INFO):  # a complete folder is kept, and said so
        [summary] = prepare_bitext(bitext, opts(tmp_path, max_lines=3))
    assert "Skipping" in caplog.text and "--overwrite" in caplog.text and summary.num_examples == 2
    assert count_examples(tmp_path / "out/toy/mt_en-de") == 2
    prepare_bitext(bitext, opts(tmp_path, max_lines=3, overwrite=True))
    assert count_examples(tmp_path / "out/toy/mt_en-de") == 3


def test_sentencepiece_token_counts(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    corpus = write_lines(tmp_path / "sp.txt", [e for e in EN + DE if e] * 20)
    spm.SentencePieceTrainer.train(input=corpus, model_prefix=str(tmp_path / "sp"), vocab_size=40,
                                   model_type="bpe", minloglevel=2)
    write_lines(tmp_path / "train.en", EN[:3])
    write_lines(tmp_path / "train.de", DE[:3])
    bitext = BitextOptions(f"{tmp_path}/train.{{src_lang}}", f"{tmp_path}/train.{{tgt_lang}}", pairs=[("en", "de")])
    [s] = prepare_bitext(bitext, opts(tmp_path, tokenizer=str(tmp_path / "sp.model")))
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "sp.model"))
    assert s.token_unit == "sentencepiece"
    assert s.source_tokens == sum(len(sp.encode(t)) for t in EN[:3]) != 9


@pytest.fixture
def audio_dir(tmp_path) -> Path:
    write_wav(tmp_path / "data/wav/a.wav", 0.5)
    write_wav(tmp_path / "data/wav/b.wav", 1.25)
    write_wav(tmp_path / "data/wav/c.wav", 0.75, sr=8000)
    return tmp_path / "data"


def write_manifest(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_manifest_round_trip_st_and_asr(tmp_path, audio_dir):
    manifest = write_manifest(audio_dir / "train.json", [
        {"audio_filepath": "wav/a.wav", "duration": 0.5, "text": "hello there", "answer": "hallo da",
         "source_lang": "en", "target_lang": "de"},
        {"audio_filepath": str(audio_dir / "wav/b.wav"), "text": "good morning", "target_text": "guten Morgen"},
        {"audio_filepath": "wav/c.wav", "text": "only words"},
    ])
    summaries = prepare_audio(ManifestOptions(manifest, source_lang="en", target_lang="de"), opts(tmp_path))
    st = read_back(tmp_path / "out/toy/st_en-de")
    assert [(c.id, c.duration, c.supervisions[0].text, E.target_text(c), E.task(c)) for c in st] == [
        ("toy-en-de-1", 0.5, "hello there", "hallo da", "st"),
        ("toy-en-de-2", 1.25, "good morning", "guten Morgen", "st"),
    ]
    assert st[1].load_audio().shape == (1, 20000)
    [asr] = read_back(tmp_path / "out/toy/asr_en-en")
    assert (asr.duration, asr.sampling_rate, E.target_text(asr), E.target_lang(asr)) == (0.75, 8000, "only words", "en")
    by_name = {s.name: s for s in summaries}
    assert by_name["toy_st_en-de"].hours == pytest.approx(1.75 / 3600)
    assert by_name["toy_asr_en-en"].target_tokens == 2


def test_manifest_custom_target_field_and_missing_lang(tmp_path, audio_dir):
    manifest = write_manifest(audio_dir / "m.json", [{"audio_filepath": "wav/a.wav", "text": "hi", "tr": "salut"}])
    [s] = prepare_audio(ManifestOptions(manifest, translation_keys=("tr",), source_lang="en", target_lang="fr"),
                        opts(tmp_path))
    assert (s.task, s.target_lang, s.num_examples) == ("st", "fr", 1)
    with pytest.raises(ValueError, match=f"{manifest}:1: no target_lang"):
        prepare_audio(ManifestOptions(manifest, translation_keys=("tr",), source_lang="en"), opts(tmp_path / "x"))


def test_unreadable_audio_names_manifest_line_and_audio(tmp_path, audio_dir):
    (audio_dir / "wav/broken.wav").write_bytes(b"not audio")
    manifest = write_manifest(audio_dir / "train.json", [
        {"audio_filepath": "wav/a.wav", "text": "hi"},
        {"audio_filepath": "wav/broken.wav", "text": "hi"},
    ])
    with pytest.raises(ValueError) as err:
        prepare_audio(ManifestOptions(manifest, source_lang="en"), opts(tmp_path))
    assert f"{manifest}:2: cannot read audio {str(audio_dir / 'wav/broken.wav')!r}" in str(err.value)


def test_invalid_json_names_file_and_line(tmp_path, audio_dir):
    manifest = audio_dir / "bad.json"
    manifest.write_text(json.dumps({"audio_filepath": "wav/a.wav", "text": "hi"}) + "\n{oops\n")
    with pytest.raises(ValueError, match=f"{manifest}:2: not valid JSON"):
        prepare_audio(ManifestOptions(str(manifest), source_lang="en"), opts(tmp_path))


def test_tsv_round_trip(tmp_path, audio_dir):
    tsv = audio_dir / "train.tsv"
    tsv.write_text('audio\ttranscript\ttranslation\ttarget_lang\n'
                   'wav/a.wav\tsay "cheese"\tdis "fromage"\tfr\n'
                   'wav/b.wav\tgood night\tgute Nacht\tde\n')
    prepare_audio(TsvOptions(str(tsv), source_lang="en"), opts(tmp_path))
    [fr] = read_back(tmp_path / "out/toy/st_en-fr")
    [de] = read_back(tmp_path / "out/toy/st_en-de")
    assert (fr.duration, fr.supervisions[0].text, E.target_text(fr)) == (0.5, 'say "cheese"', 'dis "fromage"')
    assert (de.duration, E.source_lang(de), E.target_lang(de), E.target_text(de)) == (1.25, "en", "de", "gute Nacht")


def test_tsv_without_translation_is_asr_and_bad_rows_are_named(tmp_path, audio_dir):
    tsv = audio_dir / "asr.tsv"
    tsv.write_text("audio\ttranscript\tsource_lang\nwav/c.wav\tcount to three\tes\n")
    [s] = prepare_audio(TsvOptions(str(tsv)), opts(tmp_path))
    assert (s.task, s.source_lang, s.target_lang, s.num_examples) == ("asr", "es", "es", 1)
    tsv.write_text("audio\ttranscript\nwav/c.wav\tone\textra\n")
    with pytest.raises(ValueError, match=f"{tsv}:2: 3 tab-separated fields"):
        prepare_audio(TsvOptions(str(tsv), source_lang="es"), opts(tmp_path / "x"))
    tsv.write_text("path\ttranscript\nwav/c.wav\tone\n")
    with pytest.raises(ValueError, match=f"{tsv}:2: no 'audio' field"):
        prepare_audio(TsvOptions(str(tsv), source_lang="es"), opts(tmp_path / "y"))


def test_cli_bitext_writes_folder_summary_and_sources(tmp_path, capsys):
    write_lines(tmp_path / "c/train.en.gz", EN[:3])
    write_lines(tmp_path / "c/train.de.gz", DE[:3])
    write_lines(tmp_path / "c/train.fr.gz", ["un", "deux", "trois"])
    out = tmp_path / "out"
    rc = main(["bitext", "--src-template", f"{tmp_path}/c/train.{{src_lang}}.gz", "--tgt-template",
               f"{tmp_path}/c/train.{{tgt_lang}}.gz", "--langs", "en,de,fr", "--pairs", "en-de,en-fr",
               "--dataset", "toy", "--out", str(out), "--no-progress"])
    assert rc == 0
    assert count_examples(out / "toy/mt_en-de") == 3 and count_examples(out / "toy/mt_en-fr") == 3
    assert sorted(p.name for p in (out / "toy").iterdir()) == [
        "mt_en-de", "mt_en-de.complete.json", "mt_en-fr", "mt_en-fr.complete.json", "sources.yaml", "summary.json"]
    summary = json.loads((out / "toy/summary.json").read_text())
    assert [(f["name"], f["num_examples"], f["dropped"]) for f in summary["folders"]] == [
        ("toy_mt_en-de", 3, 0), ("toy_mt_en-fr", 3, 0)]
    sources = [SourceSpec(**s) for s in yaml.safe_load((out / "toy/sources.yaml").read_text())]
    assert [(s.path, s.task, s.modality, s.source_lang, s.target_lang, s.num_examples) for s in sources] == [
        (str(out / "toy/mt_en-de"), "mt", "text", "en", "de", 3), (str(out / "toy/mt_en-fr"), "mt", "text", "en", "fr", 3)]
    assert "toy_mt_en-fr" in capsys.readouterr().out


def test_cli_all_pairs_and_reports_merge_across_runs(tmp_path):
    for lang, lines in (("en", EN[:2]), ("de", DE[:2]), ("fr", ["un", "deux"])):
        write_lines(tmp_path / f"c/train.{lang}", lines)
    common = ["--src-template", f"{tmp_path}/c/train.{{src_lang}}", "--tgt-template", f"{tmp_path}/c/train.{{tgt_lang}}",
              "--dataset", "toy", "--out", str(tmp_path / "out"), "--no-progress"]
    assert main(["bitext", *common, "--pairs", "en-de"]) == 0
    assert main(["bitext", *common, "--langs", "en,fr,es", "--all-pairs"]) == 0
    summary = json.loads((tmp_path / "out/toy/summary.json").read_text())
    assert [f["name"] for f in summary["folders"]] == ["toy_mt_en-de", "toy_mt_en-fr", "toy_mt_fr-en"]
    assert len(yaml.safe_load((tmp_path / "out/toy/sources.yaml").read_text())) == 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bitext", "--src-template", "a", "--tgt-template", "b", "--pairs", "en-de", "--dataset", "t", "--out", "o",
          "--shard-size", "0"], "--shard-size: expected a positive integer, got '0'"),
        (["bitext", "--src-template", "x/{foo}", "--tgt-template", "x/{tgt_lang}", "--pairs", "en-de", "--dataset",
          "t", "--out", "o"], "unknown variable {foo}"),
        (["manifest", "--manifest", "nope.json", "--dataset", "t", "--out", "o"], "Manifest 'nope.json' does not exist"),
    ],
)
def test_cli_errors_exit_2_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("emmett-prepare")


@pytest.mark.skipif(not MULTI30K.is_dir(), reason=f"Multi30k not found at {MULTI30K}")
def test_multi30k_first_200_lines(tmp_path):
    rc = main(["bitext", "--src-template", f"{MULTI30K}/train.{{src_lang}}.gz", "--tgt-template",
               f"{MULTI30K}/train.{{tgt_lang}}.gz", "--pairs", "en-de", "--dataset", "multi30k",
               "--out", str(tmp_path), "--max-lines", "200", "--no-progress"])
    assert rc == 0
    exs = read_back(tmp_path / "multi30k/mt_en-de")
    with gzip.open(MULTI30K / "train.en.gz", "rt", encoding="utf-8") as f:
        first_en = f.readline().strip()
    assert len(exs) == 200 and E.source_text(exs[0]) == first_en and E.example_id(exs[-1]) == "multi30k-en-de-200"
