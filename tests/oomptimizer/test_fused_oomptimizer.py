"""The OOMptimizer for fused steps (``data.fusion: zip``) on a tiny SALM-T5 with a CPU memory budget:
text buckets within their share of the room, audio buckets measured beside the worst text batch."""

import dataclasses

import pytest

from nemo_emmett.oomptimizer import probe as step_probe
from nemo_emmett.oomptimizer.config import OOMptimizerConfig
from nemo_emmett.oomptimizer.measure import plan_batch_sizes
from nemo_emmett.oomptimizer.probe import Companion
from nemo_emmett.oomptimizer.worst_case import worst_case_batch
from tests.oomptimizer.test_oomptimizer_callback import BINS, BUDGET, CPU, model  # noqa: F401 (a fixture)

FUSED = dataclasses.replace(CPU, fusion="zip")


def run(model, tmp_path, setting=FUSED, bins=BINS, budget=BUDGET):  # noqa: F811
    cfg = OOMptimizerConfig(memory_budget=budget, cache_dir=str(tmp_path / "cache"), tolerance=0.05)
    return plan_batch_sizes(model, bins, setting, cfg, progress=False), cfg


@pytest.fixture(scope="module")
def fused_search(model, tmp_path_factory):  # noqa: F811
    """The fused search and every probe it made: (modality, max_input, batch size, fits, companion, share)."""
    calls = []
    real = step_probe.StepProbe.__call__

    def counted(probe, modality, max_input, max_output, batch_size):
        r = real(probe, modality, max_input, max_output, batch_size)
        calls.append((modality, max_input, batch_size, r.fits, probe.companion, probe.share))
        return r

    mp = pytest.MonkeyPatch()
    mp.setattr(step_probe.StepProbe, "__call__", counted)
    try:
        result, cfg = run(model, tmp_path_factory.mktemp("fused"))
    finally:
        mp.undo()
    return result, cfg, calls


def test_text_is_searched_beside_one_audio_example_and_audio_beside_the_worst_text_batch(fused_search):
    result, cfg, calls = fused_search
    text_rows = result.buckets["text"]
    worst = max(text_rows, key=lambda r: r.peak)
    assert result.fused_text_bucket == worst.bucket
    companion = Companion("text", worst.max_input, worst.max_output, worst.batch_size)
    smallest_audio = Companion("audio", *min(BINS["audio"], key=sum), batch_size=1)
    for modality, *_, fused_with, share in calls:
        if modality == "text":
            assert (fused_with, share) == (smallest_audio, cfg.fused_text_share)
        else:
            assert (fused_with, share) == (companion, 1.0)
    for row in result.buckets["audio"]:
        assert row.peak <= BUDGET * (1 - cfg.headroom)  # the fused step's peak
    assert "fused steps" in result.table()


def test_text_takes_only_its_share_of_the_memory(model, fused_search, tmp_path):  # noqa: F811
    result, _, _ = fused_search
    alone, _ = run(model, tmp_path, setting=CPU, bins={"text": BINS["text"]})
    fused, unfused = result.batch_sizes("text"), alone.batch_sizes("text")
    assert all(f < u for f, u in zip(fused, unfused)), (fused, unfused)


def test_the_largest_audio_bucket_fits_beside_every_text_bucket(model, fused_search):  # noqa: F811
    result, cfg, _ = fused_search
    text = model.text

    def make_batch(modality, batch_size, max_input, max_output):
        return worst_case_batch(modality, batch_size, max_input, max_output, text=text, vocab_size=text.vocab_size,
                                prompt_len=1, token_equivalent_duration=CPU.token_equivalent_duration,
                                sampling_rate=CPU.sampling_rate)

    probe = step_probe.StepProbe(model, make_batch=make_batch, device=CPU.device, budget=BUDGET,
                                 margin=int(cfg.headroom * BUDGET), gradient_clip_val=CPU.gradient_clip_val)
    largest = max(result.buckets["audio"], key=lambda r: r.max_input + r.max_output)
    with probe.preserving_model():
        for row in result.buckets["text"]:
            probe.fuse_with(Companion("text", row.max_input, row.max_output, row.batch_size))
            r = probe("audio", largest.max_input, largest.max_output, largest.batch_size)
            assert r.fits, (row, r)


def test_fusion_needs_buckets_of_both_modalities(model, tmp_path):  # noqa: F811
    with pytest.raises(ValueError, match=r"data.fusion=zip: .* no audio buckets"):
        run(model, tmp_path, bins={"text": BINS["text"]})
    with pytest.raises(ValueError, match=r"oomptimizer.fused_text_share must be in \(0, 1\), got 1.0"):
        plan_batch_sizes(model, BINS, FUSED, OOMptimizerConfig(memory_budget=BUDGET, fused_text_share=1.0,
                                                               cache=False), progress=False)
