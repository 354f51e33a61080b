"""Streaming speech perception: chunk-by-chunk embeddings equal the whole utterance's, prefixes are
consistent, and bad input is named."""

import pytest
import torch

from nemo_emmett.modules.perception import PerceptionConfig, build_perception, context_mask
from nemo_emmett.modules.streaming import StreamingPerception, require_streaming, stable_frames, stream_chunks

TINY = dict(features=16, n_layers=2, d_model=32, n_heads=2, subsampling_conv_channels=8, conv_kernel_size=5,
            subsampling_factor=4, adapter_layers=2, dropout=0.0, ctc_weight=0.0)
STREAMING = dict(att_context_size=[4, 1], att_context_style="chunked_limited", causal_convolutions=True)


def perception(**kw):
    torch.manual_seed(0)
    return build_perception(PerceptionConfig(**TINY, **kw), output_dim=24, vocab_size=10).eval()


def full(p, audio):
    with torch.no_grad():
        out = p(audio[None], torch.tensor([audio.numel()]))
    return out.embeddings[0, :int(out.lengths[0])]  # (T, D)


@pytest.fixture(scope="module")
def audio():
    torch.manual_seed(1)
    return torch.randn(16000) * 0.1  # 1 s


@pytest.mark.parametrize("ctx", [dict(STREAMING), dict(STREAMING, att_context_size=[3, 0], att_context_style="regular")])
def test_streaming_equals_the_whole_utterance(audio, ctx):
    p = perception(**ctx)
    assert p.is_streaming
    s = StreamingPerception(p, sample_rate=16000)
    got, n = [], 0
    for piece in stream_chunks(audio, 1000):
        got.append(s.push(piece))
        n += piece.numel()
        assert sum(g.shape[0] for g in got) == stable_frames(p, n)
    got.append(s.finish())
    ref = full(p, audio)
    out = torch.cat(got)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    s.reset()  # the same utterance again gives the same frames
    again = torch.cat([s.push(audio), s.finish()])
    torch.testing.assert_close(again, ref, atol=1e-4, rtol=1e-4)


def prefix_gap(p, audio, n):
    k = stable_frames(p, n)
    assert k > 0
    return (full(p, audio[:n])[:k] - full(p, audio)[:k]).abs().max().item()


def test_prefix_gives_the_prefix_of_the_frames(audio):
    p = perception(**STREAMING)
    for n in (4000, 7200, 7777, 12000):  # 7200: the last frame's STFT window is not complete
        assert prefix_gap(p, audio, n) < 1e-4


@pytest.mark.parametrize("broken", [dict(), dict(STREAMING, causal_convolutions=False, normalize="NA"),
                                    dict(STREAMING, normalize="per_feature")])
def test_a_non_streaming_config_is_not_prefix_consistent(audio, broken):
    p = perception(**broken)
    assert not p.is_streaming
    k = stable_frames(perception(**STREAMING), 7777)  # the frames a streaming config would keep
    assert (full(p, audio[:7777])[:k] - full(p, audio)[:k]).abs().max().item() > 1e-3
    with pytest.raises(ValueError, match="simultaneous decoding needs a streaming speech encoder.*model.perception"):
        require_streaming(p, "simultaneous decoding")


def test_the_adapter_does_not_look_ahead(audio):
    p = perception(**STREAMING)
    assert p.adapter.att_context_size == [4, 1]
    p.adapter.att_context_size = None  # a bidirectional adapter breaks prefix consistency
    assert prefix_gap(p, audio, 7777) > 1e-3


def test_context_mask_matches_nemo_chunks():
    m = context_mask(6, [2, 1], "chunked_limited")
    assert m.int().tolist() == [[1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0],
                                [1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]]
    assert context_mask(3, [1, 0], "regular").int().tolist() == [[1, 0, 0], [1, 1, 0], [0, 1, 1]]


def test_bad_input_is_named(audio):
    p = perception(**STREAMING)
    with pytest.raises(ValueError, match="8000 Hz.*16000 Hz.*model.perception.sample_rate"):
        StreamingPerception(p, sample_rate=8000)
    s = StreamingPerception(p, sample_rate=16000)
    with pytest.raises(ValueError, match="empty chunk"):
        s.push(audio[:0])
    with pytest.raises(ValueError, match="1-D samples"):
        s.push(audio[None])
    with pytest.raises(ValueError, match="chunk size.*got 0"):
        next(stream_chunks(audio, 0))
    with pytest.raises(ValueError, match="no audio task"):
        require_streaming(None, "simultaneous decoding")


def test_defaults_are_unchanged():
    from nemo_emmett.modules.perception import default_module_configs

    d = default_module_configs(PerceptionConfig())
    assert "normalize" not in d["preprocessor"] and "att_context_size" not in d["encoder"]
    assert perception().adapter.att_context_size is None


def test_salm_t5_trains_a_step_with_streaming_perception(tiny_cfg, tmp_path, monkeypatch):
    from nemo_emmett.models.salm_t5 import SalmT5
    from tests.models.test_salm_t5 import audio_batch

    monkeypatch.setenv("NEMO_EMMETT_CACHE", str(tmp_path / "cache"))
    cfg = {**tiny_cfg, "perception": {**tiny_cfg["perception"], "att_context_size": [8, 1],
                                      "causal_convolutions": True}}
    model = SalmT5(cfg)
    assert model.perception.is_streaming
    model.train()
    before = {n: p.detach().clone() for n, p in model.perception.named_parameters()}
    loss, _ = model.task_losses(audio_batch(model))
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert torch.isfinite(loss)
    changed = [n for n, p in model.perception.named_parameters() if not torch.equal(p, before[n])]
    assert any(n.startswith("encoder.") for n in changed) and any(n.startswith("adapter.") for n in changed)
    assert StreamingPerception(model.perception.eval(), 16000).frames_per_chunk == 2
