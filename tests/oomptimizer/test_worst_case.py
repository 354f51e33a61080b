"""The OOMptimizer's synthetic worst-case batch: the collated batch type, as long as the bucket allows."""

import torch

from nemo_emmett.data.batch import TranslationBatch
from nemo_emmett.oomptimizer.worst_case import worst_case_batch


class Specials:
    pad_id = 0
    eos_id = 1


def make(modality, **kw):
    args = {"text": Specials(), "vocab_size": 50, "prompt_len": 2, "token_equivalent_duration": 0.08,
            "sampling_rate": 16000, **kw}
    return worst_case_batch(modality, 3, 10.0, 7.0, **args)


def test_text_worst_case_is_a_full_length_text_batch():
    b = make("text")
    assert isinstance(b, TranslationBatch) and len(b) == 3 and (b.modality, b.bucket) == ("text", -1)
    assert b.directions == [("mt", "xx", "yy")] * 3
    assert b.source_ids.shape == (3, 10) and b.source_lens.tolist() == [10] * 3
    # the bucket's 7 output ids are what collate makes (EOS included): no extra EOS on top
    assert b.target_ids.shape == (3, 7) and b.target_lens.tolist() == [7] * 3
    assert (b.target_ids[:, -1] == 1).all() and (b.target_ids[:, :-1] > 1).all()  # no pad or EOS inside
    assert b.prompt_ids.shape == (3, 2) and (b.source_ids > 1).all()
    assert b.audio is None and b.transcript_ids is None


def test_audio_worst_case_has_the_bucket_length_of_speech_and_the_direction():
    b = make("audio", direction=("asr", "en", "en"))
    assert b.modality == "audio" and b.directions == [("asr", "en", "en")] * 3
    samples = round(10.0 * 0.08 * 16000)
    assert b.audio.shape == (3, samples) and b.audio.dtype == torch.float32
    assert b.audio_lens.tolist() == [samples] * 3
    assert b.transcript_ids.shape == (3, 10) and b.source_ids is None
    assert torch.equal(make("audio").audio, b.audio)  # seeded: the same batch every probe
