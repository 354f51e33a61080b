import gzip
import itertools

import pytest
import torch

from nemo_emmett.data.batch import TranslationBatch
from nemo_emmett.data.config import parse_data_config
from nemo_emmett.data.datamodule import EmmettDataModule
from nemo_emmett.data.dataset import StreamedBatch
from nemo_emmett.startup import resolve_sources
from tests.conftest import WordLengthIds, write_audio_source, write_text_source


def data_cfg(tmp_path, text_sources, *, num_workers, audio=None, **kw):
    sources = [
        {"name": "a", "path": str(text_sources["a"]), "task": "mt", "source_lang": "en", "target_lang": "de"},
        {"name": "b", "path": str(text_sources["b"]), "task": "mt", "source_lang": "en", "target_lang": "fr"},
    ]
    if audio is not None:
        sources.append({"name": "au", "path": str(audio), "task": "st", "source_lang": "en", "target_lang": "de"})
    return {
        "train_sources": sources,
        "validation_sources": sources,
        "demo": {"enabled": False},
        "tokenizer": {"vocab_size": 40},
        "num_workers": num_workers,
        "val_batch_size": 16,
        "text_buckets": {"max_padded_size": 120, "num_input_bins": 3, "num_output_bins": 2},
        "audio_buckets": {"max_padded_size": 200, "num_input_bins": 2, "num_output_bins": 2},
        **kw,
    }


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NEMO_EMMETT_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_validation_yields_each_example_exactly_once(tmp_path, text_sources, num_workers):
    audio = write_audio_source(tmp_path / "au", "au", 15)
    dm = EmmettDataModule(data_cfg(tmp_path, text_sources, num_workers=num_workers, audio=audio), text=WordLengthIds())
    ids = [i for b in dm.val_dataloader() for i in b.ids]
    assert len(ids) == len(set(ids)) == 300 + 120 + 15


def test_training_batches_are_collated_tensors(tmp_path, text_sources):
    audio = write_audio_source(tmp_path / "au", "au", 15)
    cfg = data_cfg(tmp_path, text_sources, num_workers=0, audio=audio)
    for s in cfg["train_sources"]:
        s["weight"] = 1.0
    dm = EmmettDataModule(cfg, text=WordLengthIds())
    seen = set()
    for item in itertools.islice(dm.train_dataloader(), 40):
        assert isinstance(item, StreamedBatch) and isinstance(item.batch, TranslationBatch)
        assert (item.state.slot, item.state.num_slots) == (0, 1) and "stats" in item.state.sampler
        b = item.batch
        seen.add(b.modality)
        n = len(b)
        assert b.target_ids.shape[0] == n and b.target_lens.max() == b.target_ids.shape[1]
        assert (b.target_ids.gather(1, b.target_lens[:, None] - 1) == 1).all()  # each ends in EOS
        assert b.prompt_ids.tolist() == [[2]] * n
        if b.modality == "audio":
            assert b.audio.dtype == torch.float32 and b.audio.shape[0] == n
            assert int(b.audio_lens.max()) == b.audio.shape[1]
        else:
            assert b.source_ids.shape[0] == n
    assert seen == {"audio", "text"}


def consume(dm, loader_iter, n):
    return [dm.record(next(loader_iter)).ids for _ in range(n)]


@pytest.mark.parametrize(("num_workers", "stop_after"), [(0, 7), (2, 7), (2, 10)])
def test_resume_continues_the_stream_across_workers(tmp_path, text_sources, num_workers, stop_after):
    cfg = data_cfg(tmp_path, text_sources, num_workers=num_workers)
    dm = EmmettDataModule(cfg, text=WordLengthIds())
    it = iter(dm.train_dataloader())
    consume(dm, it, stop_after)
    state = dm.state_dict()
    reference = consume(dm, it, 12)
    del it

    resumed = EmmettDataModule(cfg, text=WordLengthIds())
    resumed.load_state_dict(state)
    got = consume(resumed, iter(resumed.train_dataloader()), 12)
    assert got == reference


def test_error_in_a_worker_stops_the_main_process(tmp_path, text_sources):
    bad = write_text_source(tmp_path / "bad", "bad", 30, shard_size=30)
    with gzip.open(bad / "text.000000.jsonl.gz", "at") as f:
        f.write("{not json\n")
    # The shard no longer matches its completion marker; allow_incomplete lets it reach the workers.
    cfg = data_cfg(tmp_path, {"a": text_sources["a"], "b": bad}, num_workers=2, estimation_examples=5,
                   allow_incomplete=True)
    dm = EmmettDataModule(cfg, text=WordLengthIds())
    with pytest.raises(Exception, match=r"text\.000000\.jsonl\.gz:31: not valid JSON"):
        for _ in itertools.islice(dm.train_dataloader(), 200):
            pass


def test_config_errors_name_the_culprit(tmp_path, text_sources):
    with pytest.raises(Exception, match="temperatur"):
        parse_data_config({"temperatur": 2.0})
    cfg = data_cfg(tmp_path, text_sources, num_workers=0)
    cfg["train_sources"][1]["weight"] = 1.0
    with pytest.raises(ValueError, match=r"sources without one: \['a'\]"):
        EmmettDataModule(cfg, text=WordLengthIds()).setup()
    cfg["train_sources"][0]["weight"] = -1.0
    with pytest.raises(ValueError, match="source 'a': weight must be a finite number > 0"):
        EmmettDataModule(cfg, text=WordLengthIds()).setup()
    missing = data_cfg(tmp_path, text_sources, num_workers=0)
    missing["train_sources"][0]["path"] = str(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="nope"):
        EmmettDataModule(missing, text=WordLengthIds()).setup()
    with pytest.raises(ValueError, match="nothing to train on"):
        resolve_sources({"demo": {"enabled": False}})


def test_building_the_plan_never_writes_data(monkeypatch):
    """The demo corpus is built at start-up (``resolve_sources``), never by the data module."""
    import nemo_emmett.data.prepare.demo as demo

    monkeypatch.setattr(demo, "build_demo_corpus", lambda *a, **k: pytest.fail("the data plan synthesised speech"))
    with pytest.raises(ValueError, match="data.train_sources is empty"):
        EmmettDataModule({}, text=WordLengthIds()).setup()


def test_start_up_fills_in_the_demo_sources(monkeypatch, tmp_path, text_sources):
    import nemo_emmett.data.prepare.demo as demo
    from nemo_emmett.data.sources import SourceSpec

    spec = SourceSpec(name="a", path=str(text_sources["a"]), task="mt", source_lang="en", target_lang="de")
    monkeypatch.setattr(demo, "demo_sources", lambda dc: ([spec], [spec]))
    cfg = resolve_sources({})
    assert [s["name"] for s in cfg.train_sources] == [s["name"] for s in cfg.validation_sources] == ["a"]
    assert resolve_sources({"train_sources": [{**cfg.train_sources[0], "name": "given"}]}).train_sources[0]["name"] == "given"


def test_set_batch_sizes_replaces_one_modality_and_checks_the_count(tmp_path, text_sources):
    dm = EmmettDataModule(data_cfg(tmp_path, text_sources, num_workers=0), text=WordLengthIds())
    dm.setup()
    n = len(dm.plan.buckets["text"].grid)
    dm.set_batch_sizes("text", list(range(1, n + 1)))
    assert dm.plan.buckets["text"].batch_sizes == list(range(1, n + 1))
    assert dm.train_dataset().buckets["text"].batch_sizes == list(range(1, n + 1))  # what the loader reads
    with pytest.raises(ValueError, match=f"expected {n} batch sizes"):
        dm.set_batch_sizes("text", [4])
    with pytest.raises(KeyError, match="no 'audio' buckets"):
        dm.set_batch_sizes("audio", [4])


class FakeTrainer:
    def __init__(self, rank, world):
        self.global_rank, self.world_size = rank, world


def rank_module(cfg, rank, world):
    dm = EmmettDataModule(cfg, text=WordLengthIds())
    dm.trainer = FakeTrainer(rank, world)
    return dm


@pytest.mark.parametrize("num_workers", [0, 2])
def test_plain_ddp_ranks_read_disjoint_parts_of_every_source(tmp_path, text_sources, num_workers):
    """Plain DDP (no component_sync): each rank reads every source, but a different part of it, and
    validation covers each example exactly once over the ranks."""
    audio = write_audio_source(tmp_path / "au", "au", 16)
    cfg = data_cfg(tmp_path, text_sources, num_workers=num_workers, audio=audio)
    ranks = [rank_module(cfg, r, 2) for r in range(2)]
    val = [[i for b in dm.val_dataloader() for i in b.ids] for dm in ranks]
    assert not set(val[0]) & set(val[1])
    assert sorted(val[0] + val[1]) == sorted(set(val[0] + val[1])) and len(val[0] + val[1]) == 300 + 120 + 16
    train = [{i for b in itertools.islice(dm.train_dataloader(), 12) for i in b.batch.ids} for dm in ranks]
    assert train[0] and train[1] and not train[0] & train[1]
    assert [{i.split("-")[0] for i in ids} for ids in train] == [{"a", "b"}] * 2  # both ranks read both sources
