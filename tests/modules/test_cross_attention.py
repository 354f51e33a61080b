"""The speech cross-attention: shape of the queries, reads the speech (not its padding), never looks
at later text positions, and one position at a time with ``past`` gives what the whole sequence gives."""

import pytest
import torch

from nemo_emmett.modules.cross_attention import CrossAttentionConfig, SpeechCrossAttention

pytestmark = pytest.mark.usefixtures("one_torch_thread")

B, L, T, D = 2, 5, 7, 16


@pytest.fixture
def module():
    torch.manual_seed(0)
    return SpeechCrossAttention.from_config(CrossAttentionConfig(num_layers=2, num_heads=4, ff_dim=32), D).eval()


def test_output_has_the_shape_of_the_queries_and_changes_with_the_speech(module):
    text, speech, lens = torch.randn(B, L, D), torch.randn(B, T, D), torch.tensor([T, 4])
    out, _ = module(text, speech, lens)
    assert out.shape == text.shape
    assert not torch.allclose(out, text)  # it adds something
    other, _ = module(text, torch.randn(B, T, D), lens)
    assert not torch.allclose(out[0], other[0]) and not torch.allclose(out[1], other[1])


def test_padding_frames_are_not_read(module):
    text, speech, lens = torch.randn(B, L, D), torch.randn(B, T, D), torch.tensor([T, 4])
    noisy = speech.clone()
    noisy[1, 4:] = 100.0  # beyond example 1's length
    assert torch.allclose(module(text, speech, lens)[0], module(text, noisy, lens)[0], atol=1e-6)


def test_no_position_sees_later_ones_and_incremental_equals_full(module):
    text, speech, lens = torch.randn(B, L, D), torch.randn(B, T, D), torch.tensor([T, 4])
    full, _ = module(text, speech, lens)
    changed = text.clone()
    changed[:, -1] += 1.0
    assert torch.allclose(module(changed, speech, lens)[0][:, :-1], full[:, :-1], atol=1e-6)
    # what decoding does: the first positions at once, then one at a time with what the block kept
    out, past = module(text[:, :2], speech, lens)
    steps = [out]
    for i in range(2, L):
        mask = torch.ones(B, i, dtype=torch.bool)
        out, past = module(text[:, i : i + 1], speech, lens, positions=torch.full((B, 1), i), past=past,
                           past_mask=mask)
        steps.append(out)
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


def test_left_padding_changes_nothing_for_real_tokens(module):
    text, speech, lens = torch.randn(1, L, D), torch.randn(1, T, D), torch.tensor([T])
    alone, _ = module(text, speech, lens)
    padded = torch.cat([torch.randn(1, 2, D), text], dim=1)  # two padding positions in front
    mask = torch.tensor([[False, False] + [True] * L])
    positions = torch.tensor([[0, 0, *range(L)]])
    out, _ = module(padded, speech, lens, text_mask=mask, positions=positions)
    assert torch.isfinite(out).all() and torch.allclose(out[:, 2:], alone, atol=1e-5)


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match="num_heads"):
        SpeechCrossAttention(d_model=10, num_layers=1, num_heads=4)
    with pytest.raises(ValueError, match="num_layers"):
        SpeechCrossAttention(d_model=16, num_layers=0, num_heads=4)
