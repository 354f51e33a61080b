"""Bucketing and the model agree on every example's length: ``LengthMeasure`` (the run's tokenizer,
through ``TokenCounter``) equals what the collated batch holds, for each tokenizer kind (our
SentencePiece, T5, NLLB with its language codes); and the OOMptimizer's worst case of a bucket is
exactly as long as the examples bucketed into it."""

from __future__ import annotations

import numpy as np
import pytest

from nemo_emmett.data.dataset import collate
from nemo_emmett.data.examples import is_audio, make_audio_example, make_text_example
from nemo_emmett.data.lengths import LengthMeasure, TokenCounter
from nemo_emmett.data.sampler import Batch
from nemo_emmett.oomptimizer.measure import prompt_length
from nemo_emmett.oomptimizer.worst_case import worst_case_batch
from nemo_emmett.parts.text_processor import TextProcessor
from tests.models.test_encdec_backbones import build_tokenizer
from tests.models.test_salm_t5 import _wav_bytes

TED = 0.08
SR = 16000


@pytest.fixture(scope="module", params=["spm", "t5", "nllb"])
def text(request, spm_path, tmp_path_factory) -> TextProcessor:
    if request.param == "spm":
        return TextProcessor(spm_path=spm_path)
    out = tmp_path_factory.mktemp(request.param)
    build_tokenizer(request.param, spm_path, out).save_pretrained(out / "tok")
    return TextProcessor(hf_path=str(out / "tok"))


def corpus() -> list:
    """Text en->de and en->fr, ST en->de and ASR en, of varied lengths."""
    from lhotse import Recording
    from lhotse.audio import AudioSource

    words = ["one", "two hundred", "three hundred and nine", "vier", "fünf hundert neun sixty", ""]
    exs = [make_text_example(example_id=f"t{i}", source_text=words[i % 5], target_text=words[(i * 2 + 1) % 6],
                             source_lang="en", target_lang="de" if i % 2 else "fr", dataset="d") for i in range(6)]
    rng = np.random.default_rng(0)
    for i in range(4):
        samples = (0.1 * rng.standard_normal(int(SR * (0.3 + 0.4 * i)))).astype("float32")
        rec = Recording(id=f"r{i}", sources=[AudioSource(type="memory", channels=[0], source=_wav_bytes(samples))],
                        sampling_rate=SR, num_samples=len(samples), duration=len(samples) / SR)
        asr = i % 2 == 0
        exs.append(make_audio_example(recording=rec, transcript=words[i], source_lang="en",
                                      target_text=words[i] if asr else words[i + 1], target_lang="en" if asr else "de",
                                      task="asr" if asr else "st", dataset="d"))
    return exs


def test_bucketing_lengths_are_the_collated_lengths(text):
    measure = LengthMeasure(TokenCounter(text), token_equivalent_duration=TED)
    exs = corpus()
    for modality in ("text", "audio"):
        group = [e for e in exs if is_audio(e) == (modality == "audio")]
        b = collate(Batch(modality, 0, 99, 99, group, [(1, 1)] * len(group)), sampling_rate=SR, text=text)
        # text: source ids; audio: token-equivalent frames of the audio the model receives
        inputs = b.source_lens.tolist() if modality == "text" else (b.audio_lens.double() / SR / TED).tolist()
        model = list(zip(inputs, b.target_lens.tolist()))
        bucketing = [measure(e) for e in group]
        assert bucketing == pytest.approx(model)
    if text.code_family:  # the units differ from the bare text's tokens: codes and EOS are counted
        e = exs[0]
        assert measure(e)[0] == len(text.encode("one")) + 2 and measure(e)[1] == len(text.encode("two hundred")) + 2


def test_the_worst_case_of_a_bucket_is_as_long_as_its_longest_example(text):
    measure = LengthMeasure(TokenCounter(text), token_equivalent_duration=TED)
    exs = [e for e in corpus() if not is_audio(e)]
    max_in, max_out = (max(measure(e)[k] for e in exs) for k in (0, 1))
    real = collate(Batch("text", 0, max_in, max_out, exs, [(1, 1)] * len(exs)), sampling_rate=SR, text=text)
    directions = sorted(set(real.directions))
    worst = worst_case_batch("text", 2, max_in, max_out, text=text, vocab_size=text.vocab_size,
                             prompt_len=prompt_length(text, directions), token_equivalent_duration=TED,
                             sampling_rate=SR)
    assert worst.target_ids.shape[1] == real.target_ids.shape[1] == max_out  # EOS counted once
    assert worst.source_ids.shape[1] == real.source_ids.shape[1] == max_in
    assert worst.prompt_ids.shape[1] == max(1, real.prompt_ids.shape[1])


def test_training_batches_fit_the_buckets_they_were_counted_into(text, tmp_path, text_sources, monkeypatch):
    """The whole data path with the real tokenizer: every collated example is within its bucket's edges."""
    import itertools

    from nemo_emmett.data.datamodule import EmmettDataModule
    from tests.data.test_datamodule import data_cfg

    monkeypatch.setenv("NEMO_EMMETT_CACHE", str(tmp_path / "cache"))
    dm = EmmettDataModule(data_cfg(tmp_path, text_sources, num_workers=0), text=text)
    dm.setup("fit")
    bins = dm.plan.buckets["text"].grid.bins
    seen = 0
    for item in itertools.islice(dm.train_dataloader(), 15):
        b = item.batch
        max_in, max_out = bins[b.bucket]
        assert int(b.source_lens.max()) <= max_in and int(b.target_lens.max()) <= max_out, (b.bucket, bins)
        seen += len(b)
    assert seen > 0
