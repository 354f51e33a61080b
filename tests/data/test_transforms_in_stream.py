"""Transforms in the training stream: rejected examples counted per reason (also in Lightning's logged
metrics) and never batched, sampled segmentations collated as they were bucketed, validation untouched,
and resume exact with transforms on."""

import itertools

import pytest

from nemo_emmett.data.bucketing import BucketGrid
from nemo_emmett.data.datamodule import EmmettDataModule
from nemo_emmett.data.examples import example_id, source_text, subword_sampling
from nemo_emmett.data.lengths import LengthMeasure, TokenCounter
from nemo_emmett.data.multiplexer import Multiplexer
from nemo_emmett.data.sampler import Bucketing2DSampler, ModalityBuckets
from nemo_emmett.data.shar import list_shards
from nemo_emmett.data.stream import ShardedStream
from nemo_emmett.data.transforms import SourceTransforms, parse_transforms
from nemo_emmett.parts.text_processor import TextProcessor
from tests.conftest import WordLengthIds
from tests.data.test_datamodule import consume, data_cfg

FILTERS = [{"name": "filter_length", "max_tokens": 15}, {"name": "filter_ratio", "max_ratio": 3}]
SAMPLING = [*FILTERS, {"name": "subword_sampling", "alpha": 0.2}]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NEMO_EMMETT_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def spm_words(tmp_path_factory):
    """A SentencePiece model of the test sources' words (s0..s9, t0..t9), tags included."""
    from nemo_emmett.data.prepare.tokenizer import train_sentencepiece

    lines = [" ".join(f"{p}{(i * k) % 10}" for k in range(12)) for p in "st" for i in range(30)]
    path = train_sentencepiece(lines, vocab_size=40, key={"test": "words"}, out_dir=tmp_path_factory.mktemp("spm"),
                               user_defined_symbols=["<de>", "<fr>"])
    return TextProcessor(spm_path=str(path))


def words_rejected(ex) -> str | None:
    src, tgt = (len(t.split()) for t in (source_text(ex), ex.target.text))
    if max(src, tgt) > 15:
        return "length"
    return "length_ratio" if max(src, tgt) / min(src, tgt) > 3 else None


def test_every_draw_is_batched_waiting_dropped_or_filtered_under_its_reason(text_sources):
    names = ("a", "b")
    streams = [ShardedStream(n, list_shards(text_sources[n]), seed=3) for n in names]
    mux = Multiplexer(streams, [0.5, 0.5], seed=3)
    pipe = SourceTransforms(names, (parse_transforms(FILTERS, "t"), ()), seed=3, slot=0)
    buckets = {"text": ModalityBuckets(BucketGrid([(8, 8), (20, 20)]), [4, 2])}
    sampler = Bucketing2DSampler(buckets=buckets, measure=LengthMeasure(lambda t: len(t.split())), mux=mux,
                                 transforms=pipe)
    batches = list(itertools.islice(iter(sampler), 60))
    s = sampler.stats
    assert s.filtered["length"] > 0 and s.filtered["length_ratio"] > 0 and set(s.filtered) == {"length", "length_ratio"}
    assert s.drawn["text"] == s.emitted["text"] + len(sampler._waiting) + s.dropped_no_bucket["text"] + sum(
        s.filtered.values())
    from_a = [e for b in batches for e in b.examples if example_id(e).startswith("a-")]
    from_b = [e for b in batches for e in b.examples if example_id(e).startswith("b-")]
    assert from_a and all(words_rejected(e) is None for e in from_a)  # nothing rejected reaches a batch
    assert any(words_rejected(e) for e in from_b)  # source b has no transforms: its long pairs stay


def test_filtered_counts_are_in_the_stream_stats(tmp_path, text_sources):
    dm = EmmettDataModule(data_cfg(tmp_path, text_sources, num_workers=0, transforms=FILTERS), text=WordLengthIds())
    consume(dm, iter(dm.train_dataloader()), 10)
    stats = dm.stream_stats()
    assert stats["filtered/length"] > 0 and stats["filtered/length_ratio"] > 0
    assert "transforms: filter_length(max_tokens=15), filter_ratio" in dm.plan.summary()


def test_a_source_replaces_the_default_transforms(tmp_path, text_sources):
    cfg = data_cfg(tmp_path, text_sources, num_workers=0, transforms=FILTERS)
    cfg["train_sources"][1]["transforms"] = []
    dm = EmmettDataModule(cfg, text=WordLengthIds())
    dm.setup()
    assert [len(s.transforms) for s in dm.plan.train] == [2, 0]
    cfg["validation_sources"] = [{**cfg["validation_sources"][0], "transforms": FILTERS}]
    with pytest.raises(ValueError, match=r"data\.validation_sources\[0\] \('a'\): transforms are for training only"):
        EmmettDataModule(cfg, text=WordLengthIds()).setup()


def test_sampled_ids_are_collated_as_bucketed_and_validation_is_untouched(tmp_path, text_sources, spm_words):
    dm = EmmettDataModule(data_cfg(tmp_path, text_sources, num_workers=0, transforms=SAMPLING), text=spm_words)
    train = [dm.record(b) for b in itertools.islice(iter(dm.train_dataloader()), 8)]
    differs = 0
    for b in train:
        for i, text in enumerate(b.source_texts):
            ids = b.source_ids[i, : b.source_lens[i]].tolist()
            assert spm_words.decode(ids) == text  # a segmentation of the same text
            differs += ids != spm_words.source_ids(text)
    assert differs > 0  # ... and not always the best one
    for b in train:  # within the bucket's edges: bucketing measured the sampled ids
        assert int(b.source_lens.max()) <= dm.plan.buckets["text"].grid.bins[b.bucket][0]
    for b in itertools.islice(iter(dm.val_dataloader()), 4):
        for i, text in enumerate(b.source_texts):
            assert b.source_ids[i, : b.source_lens[i]].tolist() == spm_words.source_ids(text)
            assert b.target_ids[i, : b.target_lens[i]].tolist() == spm_words.target_ids(b.target_texts[i])


@pytest.mark.parametrize(("num_workers", "stop_after"), [(0, 5), (2, 7)])
def test_resume_is_exact_with_transforms_on(tmp_path, text_sources, spm_words, num_workers, stop_after):
    cfg = data_cfg(tmp_path, text_sources, num_workers=num_workers, transforms=SAMPLING)

    def take(dm, it, n):
        out = []
        for _ in range(n):
            b = dm.record(next(it))
            out.append((b.ids, b.source_ids.tolist(), b.target_ids.tolist()))
        return out

    dm = EmmettDataModule(cfg, text=spm_words)
    it = iter(dm.train_dataloader())
    take(dm, it, stop_after)
    state, stats = dm.state_dict(), dm.stream_stats()
    reference = take(dm, it, 10)
    del it
    resumed = EmmettDataModule(cfg, text=spm_words)
    resumed.load_state_dict(state)
    checkpointed = lambda s: {k: v for k, v in s.items() if not k.startswith(("batches_", "share_"))}  # noqa: E731
    assert checkpointed(resumed.stream_stats()) == checkpointed(stats)  # the filtered counts travel in the checkpoint
    assert any(k.startswith("filtered/") and v > 0 for k, v in stats.items())
    assert take(resumed, iter(resumed.train_dataloader()), 10) == reference  # same examples, same segmentations


def test_sampling_state_lives_on_the_example_only():
    from nemo_emmett.data.examples import make_text_example

    ex = make_text_example(example_id="x", source_text="s1", target_text="t1", source_lang="en", target_lang="de",
                           dataset="d")
    (t,) = parse_transforms([{"name": "subword_sampling"}], "t")
    import random

    out = t(ex, random.Random(0))
    assert subword_sampling(ex) is None and subword_sampling(out).alpha == 0.1
    counted = TokenCounter(WordLengthIds())
    assert LengthMeasure(counted)(ex) == (1.0, 2.0)  # a tokenizer without sampling serves unsampled examples


def test_filtered_counts_are_logged_by_a_tiny_training(tmp_path, text_sources):
    import lightning.pytorch as pl

    from nemo_emmett.data.stats import DataStreamStats
    from tests.data.test_lightning_resume import Recorder

    dm = EmmettDataModule(data_cfg(tmp_path, text_sources, num_workers=0, transforms=FILTERS), text=WordLengthIds())
    trainer = pl.Trainer(max_steps=4, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path,
                         enable_checkpointing=False, callbacks=[DataStreamStats(every_n_steps=1)])
    trainer.fit(Recorder(), datamodule=dm)
    logged = trainer.logged_metrics
    assert logged["data/filtered/length"] > 0 and logged["data/filtered/length_ratio"] > 0
    assert logged["data/filtered/length"] == dm.stream_stats()["filtered/length"]


def test_start_up_keeps_a_sources_transforms(tmp_path, text_sources):
    from nemo_emmett.data.plan import resolve_sources as resolve_specs
    from nemo_emmett.startup import resolve_sources

    cfg = data_cfg(tmp_path, text_sources, num_workers=0)
    cfg["train_sources"] = [dict(s) for s in cfg["train_sources"]]  # the validation entries are the same dicts
    cfg["train_sources"][0]["transforms"] = [{"name": "filter_ratio", "max_ratio": 2.5}, {"name": "subword_sampling"}]
    data = resolve_sources(cfg)  # sources resolved into plain entries, then parsed again by the plan
    assert data.train_sources[0]["transforms"][0] == {"name": "filter_ratio", "max_ratio": 2.5, "unit": "tokens"}
    assert data.train_sources[1]["transforms"] is None
    specs = resolve_specs(data.train_sources, "train_sources")
    assert [t.NAME for t in specs[0].transforms] == ["filter_ratio", "subword_sampling"]
    assert specs[0].transforms[0].max_ratio == 2.5
