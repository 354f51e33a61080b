import json
import random
import shutil

import numpy as np
import pytest
import yaml
from num2words import num2words

from nemo_emmett.data.config import DataConfig
from nemo_emmett.data.examples import (
    example_id,
    is_audio,
    source_lang,
    source_text,
    target_lang,
    target_text,
    task,
)
from nemo_emmett.data.prepare import demo
from nemo_emmett.data.prepare.demo import DemoCorpusConfig, balanced_sample, build_demo_corpus, split_numbers
from nemo_emmett.data.shar import count_examples, read_shar_dir

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")

AUDIO = {
    "asr_en-en": ("asr", "en", "en"),
    "st_en-de": ("st", "en", "de"),
    "st_en-fr": ("st", "en", "fr"),
    "st_en-es": ("st", "en", "es"),
}
TEXT = {
    f"mt_{a}-{b}": ("mt", a, b)
    for a, b in [("en", "de"), ("de", "en"), ("en", "fr"), ("fr", "en"), ("en", "es"), ("es", "en")]
}


def tiny(root, **kw) -> DemoCorpusConfig:
    return DemoCorpusConfig(root=str(root), num_train=20, num_val=5, num_mt_train=30, **kw)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_demo_corpus(tiny(tmp_path_factory.mktemp("demo") / "corpus"))


def number_of(ex) -> int:
    return int(example_id(ex).rsplit("-", 1)[1])


def read(path):
    return list(read_shar_dir(path))


def test_every_source_has_the_right_examples(built):
    expected_sizes = {"train": (20, 30), "validation": (5, 5)}
    numbers = {}
    for split, (n_audio, n_text) in expected_sizes.items():
        specs = {s["name"]: s for s in built.sources[split]}
        assert set(specs) == set(AUDIO) | set(TEXT)
        numbers[split] = set()
        per_source = {}
        for name, (tsk, src, tgt) in {**AUDIO, **TEXT}.items():
            spec = specs[name]
            n = n_audio if tsk != "mt" else n_text
            assert (spec["task"], spec["source_lang"], spec["target_lang"], spec["dataset"]) == (
                tsk,
                src,
                tgt,
                "demo",
            )
            assert spec["modality"] == ("text" if tsk == "mt" else "audio")
            assert spec["path"] == str(built.root / split / name)
            assert spec["num_examples"] == count_examples(spec["path"]) == n
            examples = read(spec["path"])
            assert len({example_id(e) for e in examples}) == n
            per_source[name] = {number_of(e) for e in examples}
            numbers[split] |= per_source[name]
            for ex in examples:
                k = number_of(ex)
                assert example_id(ex) == f"demo-{name}-{k:06d}"
                assert is_audio(ex) == (tsk != "mt")
                assert (task(ex), source_lang(ex), target_lang(ex)) == (tsk, src, tgt)
                assert source_text(ex) == num2words(k, lang=src)
                assert target_text(ex) == num2words(k, lang=tgt)
        # the audio sources reuse the same clips; validation uses the same numbers everywhere
        shared = AUDIO if split == "train" else {**AUDIO, **TEXT}
        assert len({frozenset(per_source[name]) for name in shared}) == 1
    assert numbers["train"].isdisjoint(numbers["validation"])
    # source specs are valid SourceSpec entries
    assert [s.direction for s in built.source_specs("validation")][:2] == ["asr:en-en", "st:en-de"]


def test_audio_is_real_speech(built):
    for split in ("train", "validation"):
        for cut in read(built.root / split / "st_en-fr"):
            audio = cut.load_audio()  # (1, T)
            assert cut.sampling_rate == 16000 and audio.shape[0] == 1
            assert 0.3 < cut.duration < 10.0
            assert audio.shape[1] == round(cut.duration * 16000)
            assert np.sqrt(np.mean(audio**2)) > 0.01
            assert np.abs(audio).max() <= 1.0
    # asr and st reuse each clip under their own cut ids
    asr = {number_of(c): c.load_audio() for c in read(built.root / "train" / "asr_en-en")}
    for cut in read(built.root / "train" / "st_en-de"):
        np.testing.assert_array_equal(cut.load_audio(), asr[number_of(cut)])


def test_summary_and_sources_yaml(built):
    summary = json.loads((built.root / "summary.json").read_text())
    assert summary["splits"]["train"]["num_audio_clips"] == 20
    assert 0 < summary["splits"]["validation"]["audio_hours"] < summary["splits"]["train"]["audio_hours"]
    on_disk = yaml.safe_load((built.root / "sources.yaml").read_text())
    assert on_disk == {split: {"sources": specs} for split, specs in built.sources.items()}
    assert json.loads((built.root / "DONE.json").read_text())["key"] == summary["key"]


def test_two_builds_are_identical(built, tmp_path):
    other = build_demo_corpus(tiny(tmp_path / "again"))
    for split in ("train", "validation"):
        for a, b in zip(built.sources[split], other.sources[split], strict=True):
            xs, ys = read(a["path"]), read(b["path"])
            assert [(example_id(x), source_text(x), target_text(x)) for x in xs] == [
                (example_id(y), source_text(y), target_text(y)) for y in ys
            ]
            if a["modality"] == "audio":
                for x, y in zip(xs, ys, strict=True):
                    np.testing.assert_array_equal(x.load_audio(), y.load_audio())


def test_cached_corpus_is_not_rebuilt(built, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("synthesize called")

    monkeypatch.setattr(demo, "synthesize_many", refuse)
    again = build_demo_corpus(tiny(built.root))
    assert again.sources == built.sources


def test_folder_without_marker_is_rebuilt(tmp_path, monkeypatch):
    cfg = tiny(tmp_path / "corpus")
    root = build_demo_corpus(cfg).root
    (root / "DONE.json").unlink()
    (root / "train" / "stray.txt").write_text("left over")

    def refuse(*args, **kwargs):
        raise RuntimeError("synthesize called")

    with monkeypatch.context() as m:
        m.setattr(demo, "synthesize_many", refuse)  # runs in this process
        with pytest.raises(RuntimeError, match="synthesize called"):
            build_demo_corpus(cfg)
    assert [p.name for p in tmp_path.iterdir()] == ["corpus"]  # the failed build left no temporary folder

    rebuilt = build_demo_corpus(cfg)
    assert (root / "DONE.json").exists() and not (root / "train" / "stray.txt").exists()
    assert all(count_examples(s["path"]) == s["num_examples"] for s in rebuilt.sources["train"])


def test_other_config_in_same_root_is_rebuilt(built, tmp_path):
    root = tmp_path / "corpus"
    build_demo_corpus(tiny(root))
    changed = build_demo_corpus(tiny(root, seed=7))
    assert changed.summary["config"]["seed"] == 7
    assert changed.sources["train"][0]["num_examples"] == 20


def test_default_root_is_keyed_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("NEMO_EMMETT_CACHE", str(tmp_path))
    a, b = DemoCorpusConfig(), DemoCorpusConfig(seed=1)
    ra = demo.resolve_root(a, demo.corpus_key(a, "v"))
    assert ra.parent == tmp_path / "demo"
    assert ra == demo.resolve_root(a, demo.corpus_key(DemoCorpusConfig(num_workers=8), "v"))
    assert ra != demo.resolve_root(b, demo.corpus_key(b, "v"))
    assert ra != demo.resolve_root(a, demo.corpus_key(a, "w"))  # another espeak-ng version


def test_missing_espeak_fails_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)

    def work(*args, **kwargs):
        raise AssertionError("work started before the espeak-ng check")

    monkeypatch.setattr(demo, "split_numbers", work)
    monkeypatch.setattr(demo, "espeak_version", work)
    with pytest.raises(RuntimeError, match="apt-get install -y espeak-ng"):
        build_demo_corpus(tiny(tmp_path / "corpus"))
    assert list(tmp_path.iterdir()) == []


def test_four_digit_split_is_disjoint_and_covers_every_length():
    groups = split_numbers(DemoCorpusConfig(max_number=9999, num_train=1500, num_mt_train=2000))
    val = set(groups["val"])
    assert len(val) == 100 and min(val) >= 10
    assert len(groups["audio"]) == len(set(groups["audio"])) == 1500
    assert {k for k in groups if k.startswith("mt:")} == {
        f"mt:{d}" for d in ["en-de", "de-en", "en-fr", "fr-en", "en-es", "es-en"]
    }
    for name, numbers in groups.items():
        if name != "val":
            assert val.isdisjoint(numbers), name
    # every single digit is trained on; 3- and 4-digit numbers get equal shares
    assert set(range(10)) <= set(groups["audio"])
    lengths = [len(str(n)) for n in groups["audio"]]
    assert abs(lengths.count(3) - lengths.count(4)) <= 1


def test_default_split_is_the_training_demo():
    """The corpus's defaults are the demo every default config trains on (one place for the numbers)."""
    cfg = DemoCorpusConfig()
    assert (cfg.max_number, cfg.num_train, cfg.num_val, cfg.num_mt_train) == (999, 800, 100, 900)
    data_demo = DataConfig().demo
    assert isinstance(data_demo, DemoCorpusConfig) and data_demo.enabled
    assert data_demo.content_fields() == cfg.content_fields()  # the same corpus, the same cache key
    groups = split_numbers(cfg)
    val = set(groups["val"])
    assert len(val) == 100 and min(val) >= 10 and max(val) <= 999
    assert len(groups["audio"]) == len(set(groups["audio"])) == 800 and val.isdisjoint(groups["audio"])
    assert set(range(10)) <= set(groups["audio"])  # every single digit is trained on
    # 10 one-digit numbers, then the two-digit ones not held out; the rest are three-digit
    lengths = [len(str(n)) for n in groups["audio"]]
    assert lengths.count(2) == 90 - sum(len(str(n)) == 2 for n in val)


def test_balanced_sample_water_fills():
    picked = balanced_sample(range(1000), 400, random.Random(0))
    lengths = [len(str(n)) for n in picked]
    # 10 one-digit, 90 two-digit numbers: all taken; the remaining 300 go to three digits
    assert (lengths.count(1), lengths.count(2), lengths.count(3)) == (10, 90, 300)
    assert len(set(picked)) == 400
    with pytest.raises(ValueError, match="cannot draw"):
        balanced_sample(range(5), 6, random.Random(0))
