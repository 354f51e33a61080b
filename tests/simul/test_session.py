"""Simultaneous decoding on a tiny SALM-T5 trained a few steps under the wait-k masks, with the frame-wise
streaming stand-in: delays, the policies' lags, the end, agreement with offline decoding, bad input."""

from __future__ import annotations

import pytest
import torch

from nemo_emmett.models.salm_t5 import SalmT5
from nemo_emmett.simul.policies import build_policy
from nemo_emmett.simul.session import SimulSession, simul_translate
from tests.conftest import TINY_BACKBONE, TINY_PERCEPTION
from tests.simul.helpers import (
    FRAME,
    audio_batch,
    framewise,
    framewise_streams,  # noqa: F401  (the fixture of pytestmark)
    simul_cfg,
    train_steps,
)

STRIDE = 2  # frames per unit: 160 ms
UNIT = STRIDE * FRAME
LANGS = {"source_lang": "en", "target_lang": "de", "sample_rate": 16000}


pytestmark = pytest.mark.usefixtures("framewise_streams")


@pytest.fixture(scope="module")
def model(spm_path, one_torch_thread):
    """Trained to say its targets (so that it writes several words before it ends)."""
    torch.manual_seed(0)
    cfg = simul_cfg({"tokenizer": {"spm_path": spm_path}, "backbone": {"config": dict(TINY_BACKBONE)},
                     "perception": dict(TINY_PERCEPTION), "decoding": {"max_new_tokens": 12}},
                    k=2, stride_frames=STRIDE)
    m = framewise(SalmT5(cfg))
    train_steps(m, audio_batch(m, frames=[12, 10, 14]), steps=100)  # 40 left it saying one word (transformers 5.25)
    return m.eval()


@pytest.fixture(scope="module")
def audio(model):
    batch = audio_batch(model, frames=[12, 10, 14])
    return [batch.audio[b, : int(n)] for b, n in enumerate(batch.audio_lens)], batch


def offline(model, batch, k: int) -> list[str]:
    model.cfg.simul.k = k
    try:
        return [" ".join(h.split()) for h in model.translate_batch(batch)]
    finally:
        model.cfg.simul.k = 2


def test_wait_k_writes_after_k_units_with_non_decreasing_delays(model, audio):
    session = SimulSession(model, build_policy("wait-k", k=2, stride=STRIDE), **LANGS)
    written, pieces = [], list(audio[0][0].split(UNIT))
    for i, piece in enumerate(pieces):
        assert not session.done
        words = session.push(piece, final=i == len(pieces) - 1)
        written.append(words)
        if i < 2:
            assert words == []  # 2 units before the first token; a word is out once the next one starts
    assert session.done and len(session.words) >= 3, session.words
    assert [w for ws in written for w in ws] == session.words
    assert len(session.delays_ms) == len(session.elapsed_ms) == len(session.words)
    assert session.delays_ms[0] >= 3 * STRIDE * 80  # k units of 160 ms for its first token, one more for the next
    assert session.delays_ms == sorted(session.delays_ms) and session.delays_ms[-1] <= 12 * 80
    assert session.elapsed_ms == sorted(session.elapsed_ms)
    assert all(e > d for d, e in zip(session.delays_ms, session.elapsed_ms))  # computation-aware: plus compute
    with pytest.raises(RuntimeError, match="after the final chunk: call reset"):
        session.push(torch.zeros(10))
    session.reset()
    assert not session.done and session.words == [] and session.delays_ms == []


def test_wait_k_past_the_source_is_the_offline_decode(model, audio):
    """k >= the whole input: every token sees all the speech, as the offline greedy decode under the masks."""
    waves, batch = audio
    results = simul_translate(model, waves, build_policy("wait-k", k=50, stride=STRIDE), **LANGS)
    assert [hyp for hyp, _, _ in results] == offline(model, batch, k=50)
    for (hyp, delays, _), wave in zip(results, waves):
        assert delays == [1000 * len(wave) / 16000] * len(hyp.split())  # nothing before the end


def test_wait_k_with_a_small_k_agrees_with_the_offline_wait_k_decode(model, audio):
    """The session re-encodes prefixes as they arrive and the decoder keeps what each position saw: with a
    streaming encoder that is the offline decode over the whole audio with the wait-k masks."""
    waves, batch = audio
    results = simul_translate(model, waves, build_policy("wait-k", k=2, stride=STRIDE), **LANGS)
    assert [hyp for hyp, _, _ in results] == offline(model, batch, k=2)


@pytest.mark.parametrize("policy", [{"name": "fixed-chunk", "n": 2, "m": 2}, {"name": "local-agreement"}])
def test_other_policies_finish_with_ordered_delays(model, audio, policy):
    waves, _ = audio
    (hyp, delays, elapsed), = simul_translate(model, waves[:1], build_policy(**policy, stride=STRIDE), **LANGS,
                                              chunk_samples=1000)  # chunks that do not line up with units
    assert hyp and len(delays) == len(elapsed) == len(hyp.split())
    assert delays == sorted(delays) and elapsed == sorted(elapsed)


def test_bad_input_is_an_error_naming_it(model, spm_path):
    session = SimulSession(model, build_policy("wait-k", k=2, stride=STRIDE), **LANGS)
    with pytest.raises(ValueError, match="an empty chunk"):
        session.push(torch.zeros(0))
    with pytest.raises(ValueError, match=r"shape \(2, 100\) and dtype torch.float32"):
        session.push(torch.zeros(2, 100))
    with pytest.raises(ValueError, match="dtype torch.int16"):
        session.push(torch.zeros(100, dtype=torch.int16))
    with pytest.raises(TypeError, match="expected a 1-D float torch.Tensor, got list"):
        session.push([0.0] * 100)
    with pytest.raises(ValueError, match="audio at 8000 Hz, but the model's preprocessor takes 16000 Hz"):
        SimulSession(model, build_policy("wait-k"), **{**LANGS, "sample_rate": 8000})
    with pytest.raises(ValueError, match="policy stride 3 frames: expected a multiple of model.simul.stride_frames=2"):
        SimulSession(model, build_policy("wait-k", stride=3), **LANGS)
    with pytest.raises(ValueError, match=r"audio_list\[1\]: expected a non-empty 1-D float tensor"):
        simul_translate(model, [torch.zeros(3000), torch.zeros(0)], build_policy("wait-k", stride=STRIDE), **LANGS)


def test_an_offline_speech_encoder_is_refused_naming_the_keys(tiny_cfg):
    """A real FastConformer with full attention context and per-utterance feature normalisation."""
    model = SalmT5(simul_cfg(tiny_cfg, k=1, stride_frames=2))
    with pytest.raises(ValueError, match="simultaneous decoding needs a streaming speech encoder.*"
                                         "model.perception.att_context_size=.*causal_convolutions=true"):
        SimulSession(model, build_policy("wait-k", stride=2), **LANGS)


def test_the_session_runs_on_a_streaming_speech_encoder(tiny_cfg):
    """A random-init streaming FastConformer (NeMo's limited context, causal convolutions): frame sizes from
    NeMo's preprocessor and subsampling, units read as soon as their frames are final, the whole path to the end."""
    from nemo_emmett.modules.streaming import stable_frames

    torch.manual_seed(0)
    cfg = simul_cfg(tiny_cfg, k=1, stride_frames=2)
    cfg["perception"] = {**cfg["perception"], "att_context_size": [8, 1], "causal_convolutions": True}
    model = SalmT5(cfg).eval()
    assert model.perception.is_streaming
    session = SimulSession(model, build_policy("wait-k", k=1, stride=2), **LANGS)
    sub = model.perception.encoder.subsampling_factor
    assert session.unit_samples == 2 * sub * 160
    audio = 0.1 * torch.randn(16000)
    n = 5 * session.unit_samples - 1  # the causal subsampling finalises frame j at feature j * 8: unit 5 is in
    for piece in audio[:n].split(session.unit_samples):
        session.push(piece)
    assert session.read == stable_frames(model.perception, n) // 2 == 5 > n // session.unit_samples
    (hyp, delays, elapsed), = simul_translate(model, [audio], build_policy("wait-k", k=1, stride=2), **LANGS)
    assert len(delays) == len(elapsed) == len(hyp.split()) and delays == sorted(delays)


def test_an_end_of_sentence_before_the_source_ends_reads_on(model, audio, monkeypatch):
    from nemo_emmett.simul.decoder import PrefixDecoder

    real, calls = PrefixDecoder.predict, []

    def first_says_eos(self):
        token = real(self)
        calls.append(list(self.seen))
        return model.eos_ids[0] if len(calls) == 1 else token

    monkeypatch.setattr(PrefixDecoder, "predict", first_says_eos)
    session = SimulSession(model, build_policy("wait-k", k=1, stride=STRIDE), **LANGS)
    pieces = list(audio[0][0].split(UNIT))
    assert session.push(pieces[0]) == [] and not session.done
    assert session.decoder.target == [] and session.decoder.seen == []  # withdrawn: nothing written
    for i, piece in enumerate(pieces[1:]):
        session.push(piece, final=i == len(pieces) - 2)
    assert calls[:2] == [[2], [4]]  # the first token predicted again with one more unit
    assert session.done and session.words


def test_latency_curve_scores_each_lag_as_the_session_decodes_it(model, audio):
    from nemo_emmett.simul.evaluate import latency_curve
    from nemo_emmett.simul.latency import SimulInstance, score_directions

    audios, batch = audio
    refs = list(batch.target_texts)
    rows = latency_curve(model, audios, refs, ks=[1, 3], progress=False, **LANGS)
    assert [r["k"] for r in rows] == [1, 3, "offline"]
    out = simul_translate(model, audios, build_policy("wait-k", k=3, stride=STRIDE), **LANGS)
    lens = [1000.0 * a.numel() / 16000 for a in audios]
    ref = score_directions([SimulInstance(h, d, n, r, e, "en-de") for (h, d, e), r, n in zip(out, refs, lens)])
    plain = {key: v for key, v in ref["en-de"].items() if not key.endswith("_CA")}  # _CA: wall time differs
    assert {key: rows[1][key] for key in plain} == plain and rows[1]["AL_CA"] >= rows[1]["AL"]
    # Offline: every word is written once the whole source is read, so AL is the mean source length.
    assert rows[2]["AL"] == pytest.approx(sum(lens) / len(lens))
    assert rows[0]["AL"] < rows[2]["AL"]
    with pytest.raises(ValueError, match=r"ks must be positive integers, got \[0\]"):
        latency_curve(model, audios, refs, ks=[0], progress=False, **LANGS)
    with pytest.raises(ValueError, match="3 audios but 2 references"):
        latency_curve(model, audios, refs[:2], ks=[1], progress=False, **LANGS)
