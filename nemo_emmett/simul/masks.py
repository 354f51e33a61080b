"""Prefix-to-prefix (wait-k) training: the attention masks under which each target token sees only the
speech prefix the policy will have read when it writes that token.

The encoder input of a simultaneous SALM-T5 is ``[prompt ; speech ; padding]`` per example (the
prompt first, ``audio_position: after_prompt``), so a longer speech prefix never moves a position:

* **encoder self-attention** (B, S, S), block-causal by ``stride`` frames: a prompt position sees the
  prompt; a speech frame in block ``b = frame // stride`` sees the prompt and the speech of blocks
  ``<= b``. Encoding a prefix of whole blocks then gives the full encoding's first states exactly.
  Padding rows see every valid position (as Hugging Face's own padding masks let them), so no row is empty.
* **decoder cross-attention** (B, U, S): target token ``i`` sees the prompt and the first
  ``visible[b, i]`` speech frames; wait-k: ``(i + k) * stride`` (:func:`wait_k_frames`), i.e. the
  blocks ``< i + k``.

Multi-path training (Elbayad et al., 2020) draws ``k`` per batch from a range (:func:`sample_k`).
:func:`hf_mask` turns a boolean mask into the 4-D mask a Hugging Face encoder-decoder (T5, mT5, Marian,
mBART, M2M100/NLLB) takes as it is, in the form of its attention implementation.

Pure tensor code imported by ``models/salm_t5.py``: this file (and the package's ``__init__``) imports
nothing from ``nemo_emmett``, which keeps the import graph one way (``tests/test_architecture.py``)."""

from __future__ import annotations

import inspect
import random
from typing import Any

import torch

HF_MASK_IMPLEMENTATIONS = ("eager", "sdpa", "flex_attention")
"""Attention implementations that take an arbitrary mask (flash attention takes only padding)."""


def _positions(prompt_lens: torch.Tensor, speech_lens: torch.Tensor, length: int):
    """(B, S) per position: its speech frame index (-1 on prompt and padding), prompt and valid flags."""
    pos = torch.arange(length, device=prompt_lens.device)[None, :]  # (1, S)
    prompt = pos < prompt_lens[:, None]  # (B, S)
    valid = pos < (prompt_lens + speech_lens)[:, None]  # (B, S)
    speech = valid & ~prompt
    frame = torch.where(speech, pos - prompt_lens[:, None], torch.full_like(pos, -1))  # (B, S)
    return frame, prompt, valid


def encoder_self_mask(prompt_lens: torch.Tensor, speech_lens: torch.Tensor, length: int, stride: int) -> torch.Tensor:
    """(B, S, S) bool, True where query position q may attend to key position j (module docstring).
    ``prompt_lens``, ``speech_lens``: (B,); ``length``: S >= max(prompt + speech)."""
    frame, prompt, valid = _positions(prompt_lens, speech_lens, length)
    block = torch.div(frame, stride, rounding_mode="floor")  # (B, S): -1 outside the speech
    q_speech, k_speech = (frame >= 0)[:, :, None], (frame >= 0)[:, None, :]  # (B, S, 1), (B, 1, S)
    earlier = block[:, None, :] <= block[:, :, None]  # (B, S, S): key block <= query block
    allowed = prompt[:, None, :] | (q_speech & k_speech & earlier)  # (B, S, S)
    pad_row = ~valid[:, :, None]  # (B, S, 1)
    return (allowed | pad_row) & valid[:, None, :]


def wait_k_frames(batch: int, tokens: int, k: int, stride: int, device: torch.device | None = None) -> torch.Tensor:
    """(B, U) speech frames each target token sees under wait-k: token ``i`` sees ``(i + k) * stride``."""
    return ((torch.arange(tokens, device=device) + k) * stride)[None, :].expand(batch, tokens)


def cross_attention_mask(prompt_lens: torch.Tensor, speech_lens: torch.Tensor, length: int,
                         visible_frames: torch.Tensor) -> torch.Tensor:
    """(B, U, S) bool, True where target token i may attend to encoder position j: the prompt and the
    first ``visible_frames[b, i]`` (B, U) speech frames (all of them for a token past the end of the
    speech). A row that would see nothing (no prompt, no frame yet) sees every valid position."""
    frame, prompt, valid = _positions(prompt_lens, speech_lens, length)
    seen = (frame >= 0)[:, None, :] & (frame[:, None, :] < visible_frames[:, :, None])  # (B, U, S)
    allowed = prompt[:, None, :] | seen
    empty = ~allowed.any(dim=-1, keepdim=True)  # (B, U, 1)
    return (allowed | empty) & valid[:, None, :]


def sample_k(k_range: tuple[int, int] | list[int], step: int, seed: int = 0) -> int:
    """Multi-path wait-k: ``k`` drawn uniformly from ``[lo, hi]`` (inclusive) for training step ``step``, the
    same on every rank and after a resume (a function of the step and the seed only)."""
    lo, hi = k_range
    return random.Random(f"simul-k/{seed}/{step}").randint(lo, hi)


def hf_mask(config: Any, allowed: torch.Tensor, dtype: torch.dtype, *, cross: bool) -> Any:
    """``allowed`` (B, Q, K) bool as the 4-D mask (B, 1, Q, K) a Hugging Face model with ``config`` takes:
    additive floats for eager attention, booleans for SDPA, a BlockMask for flex attention, built by
    ``transformers.masking_utils`` (the model's own mask code passes a 4-D mask on unchanged). ``dtype``:
    the attention's dtype; ``cross``: a decoder cross-attention mask (K: encoder positions)."""
    try:
        from transformers.masking_utils import create_bidirectional_mask
    except ImportError as err:
        import transformers

        raise ImportError(f"model.simul needs transformers >= 5.0 (transformers.masking_utils."
                          f"create_bidirectional_mask); found {transformers.__version__}") from err

    impl = getattr(config, "_attn_implementation", None)
    if impl not in HF_MASK_IMPLEMENTATIONS:
        raise ValueError(f"model.simul: the backbone's attention implementation {impl!r} takes no custom masks; "
                         f"expected one of {HF_MASK_IMPLEMENTATIONS}")
    B, Q, K = allowed.shape
    queries = torch.empty(B, Q, 1, dtype=dtype, device=allowed.device)  # only shape, dtype and device are read
    keys = torch.empty(B, K, 1, dtype=dtype, device=allowed.device) if cross else None

    def visible(b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        return allowed[b, q, kv]

    names = inspect.signature(create_bidirectional_mask).parameters  # renamed across transformers 5.x
    kwargs = {"inputs_embeds" if "inputs_embeds" in names else "input_embeds": queries}
    if "allow_is_bidirectional_skip" in names:
        kwargs["allow_is_bidirectional_skip"] = False
    return create_bidirectional_mask(config=config, attention_mask=None, encoder_hidden_states=keys,
                                     and_mask_function=visible, **kwargs)


def cache_kwargs(model: Any, cache: Any) -> dict[str, Any]:
    """``cache`` under the name ``model.forward`` takes it by: ``cache`` (transformers >= 5.x's later
    releases) or ``past_key_values``."""
    names = inspect.signature(model.forward).parameters
    return {"cache" if "cache" in names else "past_key_values": cache}
