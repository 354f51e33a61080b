"""The OOMptimizer on a tiny SALM-T5 with a CPU memory budget: real probes, measured peaks."""

import json

import pytest
import torch

from nemo_emmett.data.bucketing import load_bucket_file
from nemo_emmett.data.prepare.tokenizer import train_sentencepiece
from nemo_emmett.models.salm_t5 import SalmT5
from nemo_emmett.oomptimizer import probe as step_probe
from nemo_emmett.oomptimizer.config import OOMptimizerConfig, parse_bytes, resolve_budget
from nemo_emmett.oomptimizer.measure import ProbeSetting, plan_batch_sizes
from nemo_emmett.oomptimizer.search import BucketDoesNotFit, search_order
from tests.conftest import LINES, TINY_BACKBONE, TINY_PERCEPTION

CPU = ProbeSetting(device=torch.device("cpu"), precision="32-true", gradient_clip_val=1.0)
BINS = {"audio": [(12.0, 4.0), (25.0, 8.0)], "text": [(6.0, 6.0), (16.0, 16.0)]}
BUDGET = 12 * 2**20


@pytest.fixture(scope="module")
def model(tmp_path_factory, one_torch_thread):
    out = tmp_path_factory.mktemp("spm")
    spm = train_sentencepiece(LINES * 3, vocab_size=60, key={"test": "oom"}, out_dir=out,
                              user_defined_symbols=["<de>", "<en>"])
    cfg = {"tokenizer": {"spm_path": str(spm)}, "backbone": {"config": dict(TINY_BACKBONE)},
           "perception": dict(TINY_PERCEPTION),
           "optim": {"optimizer": {"_target_": "torch.optim.AdamW", "lr": 1e-3}, "lr_scheduler": None}}
    return SalmT5(cfg)


def run(model, tmp_path, bins=BINS, budget=BUDGET, **kw):
    cfg = OOMptimizerConfig(memory_budget=budget, cache_dir=str(tmp_path / "cache"), tolerance=0.05, **kw)
    return plan_batch_sizes(model, bins, CPU, cfg, progress=False)


class CountingProbe:
    """Wraps StepProbe.__call__ to count and keep the real probes."""

    def __init__(self, monkeypatch):
        self.calls = []
        real = step_probe.StepProbe.__call__

        def counted(probe, modality, max_input, max_output, batch_size):
            r = real(probe, modality, max_input, max_output, batch_size)
            self.calls.append((modality, max_input, max_output, r))
            return r

        monkeypatch.setattr(step_probe.StepProbe, "__call__", counted)


@pytest.fixture(scope="module")
def searched(model, tmp_path_factory):
    """One search, its probes (modality, max_input, max_output, ProbeResult), its cache folder."""
    tmp_path = tmp_path_factory.mktemp("oom")
    mp = pytest.MonkeyPatch()
    probes = CountingProbe(mp)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        result = run(model, tmp_path)
    finally:
        mp.undo()
    return result, probes.calls, tmp_path, before


def test_cpu_budget_mode_picks_the_largest_measured_fit(model, searched):
    result, calls, _, before = searched
    table = result.table()
    for modality, bins in BINS.items():
        sizes = result.batch_sizes(modality)
        assert len(sizes) == len(bins) and all(s >= 1 for s in sizes)
        # a longer bucket never gets a larger batch
        assert sizes[1] <= sizes[0], (modality, sizes)
        for row in result.buckets[modality]:
            assert row.peak <= BUDGET * (1 - OOMptimizerConfig().headroom)  # the headroom stays free
            # integer batches: b fits and b + 1 does not, so the share is at least about b / (b + 1)
            assert row.peak >= min(0.85, row.batch_size / (row.batch_size + 1.5)) * BUDGET, table
            # the answer is a measured fit and the next size up (within tolerance) was measured over budget
            mine = [r for m, i, o, r in calls if (m, i, o) == (modality, row.max_input, row.max_output)]
            assert any(r.batch_size == row.batch_size and r.fits for r in mine)
            over = [r.batch_size for r in mine if not r.fits]
            assert over and min(over) <= max(row.batch_size + 1, int(row.batch_size * 1.05) + 1)
    # peaks are real measurements: they grow with the batch
    audio = sorted((r.batch_size, r.peak) for m, i, o, r in calls if m == "audio" and i == 25.0 and r.peak)
    assert audio[-1][1] > audio[0][1] and audio[-1][0] > audio[0][0]
    # the model is as it was
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_largest_bucket_first_and_each_search_starts_from_the_previous_answer(searched):
    result, calls, _, _ = searched
    audio = [(i, o, r.batch_size) for m, i, o, r in calls if m == "audio"]
    assert audio[0][:2] == (25.0, 8.0)  # the largest bucket is searched first
    first_small = next(k for k, (i, _, _) in enumerate(audio) if i == 12.0)
    large_answer = [r for r in result.buckets["audio"] if r.max_input == 25.0][0].batch_size
    assert audio[first_small][2] == large_answer
    assert search_order([(1, 1), (1, 5), (9, 2)]) == [2, 1, 0]


def test_cache_hit_and_invalidation(model, searched, monkeypatch):
    first, _, tmp_path, _ = searched
    probes = CountingProbe(monkeypatch)
    again = run(model, tmp_path)
    assert probes.calls == []  # nothing measured: the cache answered
    assert again.batch_sizes("audio") == first.batch_sizes("audio")
    cached = list((tmp_path / "cache").glob("*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text())["key"] == first.key
    # anything the result depends on changes the key and re-runs the search (text bins only: quicker)
    text = {"text": BINS["text"]}
    run(model, tmp_path, bins=text)
    n = len(probes.calls)
    assert n > 0
    run(model, tmp_path, bins=text, budget=BUDGET // 2)
    assert len(probes.calls) > n
    n = len(probes.calls)
    model.hparams["cfg"]["label_smoothing"] = 0.1  # a different model config
    try:
        run(model, tmp_path, bins=text)
    finally:
        model.hparams["cfg"]["label_smoothing"] = 0.0
    assert len(probes.calls) > n
    assert len(list((tmp_path / "cache").glob("*.json"))) == 4


def test_bucket_that_does_not_fit_even_one_example_is_named(model, tmp_path):
    bins = {"text": [(4.0, 4.0), (400.0, 300.0)]}
    with pytest.raises(BucketDoesNotFit, match=r"text bucket 1 \(max input 400, max output 300\).*batch size 1"):
        run(model, tmp_path, bins=bins, budget=3 * 2**20)


def test_written_bucket_file_is_what_the_data_config_reads(searched, tmp_path):
    result = searched[0]
    path = tmp_path / "buckets.json"
    path.write_text(json.dumps(result.bucket_file()))
    data = load_bucket_file(path)
    assert data["audio"]["batch_sizes"] == result.batch_sizes("audio")
    assert [tuple(b) for b in data["text"]["bins"]] == BINS["text"]


@pytest.mark.parametrize("text,expected", [("512", 512), ("2GiB", 2 * 2**30), ("1.5 MB", 1_500_000), (64, 64)])
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("bad", ["lots", "2 parsecs", True])
def test_parse_bytes_rejects(bad):
    with pytest.raises(ValueError, match="memory_budget"):
        parse_bytes(bad)


@pytest.mark.parametrize("field,value", [("memory_fraction", 1.5), ("memory_fraction", 0.0), ("headroom", 1.0),
                                         ("headroom", -0.1)])
def test_out_of_range_settings_name_the_key(field, value):
    cfg = OOMptimizerConfig(memory_budget="1GiB", **{field: value})
    with pytest.raises(ValueError, match=f"oomptimizer.{field}"):
        resolve_budget(cfg, torch.device("cpu"))
