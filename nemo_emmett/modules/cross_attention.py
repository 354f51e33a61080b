"""BESTOW's speech cross-attention: the LLM's text input embeddings read the speech features.

Queries are the text input embeddings (B, L, D): the prompt, the source and, under teacher forcing
or while decoding, the answer so far. Keys and values of the cross-attention are the speech
embeddings (B, T, D). Each layer is pre-norm: causal self-attention over the text (a position sees
itself and earlier positions only, so it knows where it is in the answer), cross-attention to the
speech, a feed-forward block, each added back residually. Sinusoidal positions are added to the
queries on the way in and taken off on the way out, so the output (B, L, D) is the text
embeddings plus what each position read.

Causality keeps incremental decoding exact: a new token goes through the block alone (one query),
with the earlier positions' self-attention inputs kept per layer (``past``), and then into the LLM
with its KV cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class CrossAttentionConfig:
    num_layers: int = 2
    num_heads: int = 4
    """Must divide the LLM width."""
    ff_dim: int | None = None
    """Hidden size of each layer's feed-forward block; null: 4 x the LLM width."""
    dropout: float = 0.1


def sinusoidal_positions(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """(B, L) integer positions -> (B, L, dim) sinusoidal encodings (Vaswani et al.)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device) / half)  # (half,)
    angles = positions.float()[..., None] * freqs  # (B, L, half)
    enc = torch.cat([angles.sin(), angles.cos()], dim=-1)  # (B, L, 2 * half)
    return nn.functional.pad(enc, (0, dim - 2 * half))


def causal_block_mask(text_mask: torch.Tensor, past_mask: torch.Tensor | None, num_heads: int) -> torch.Tensor:
    """(B * heads, L, S + L) True where a query must NOT look: later positions and padding keys.
    Every position may see itself, so padded queries never get an empty (NaN) softmax row."""
    B, L = text_mask.shape
    keys = text_mask if past_mask is None else torch.cat([past_mask, text_mask], dim=1)  # (B, S + L)
    S = keys.shape[1] - L
    q = torch.arange(L, device=text_mask.device)[:, None] + S  # (L, 1): absolute index of each query
    k = torch.arange(S + L, device=text_mask.device)[None, :]  # (1, S + L)
    allowed = (k <= q)[None] & (keys[:, None, :] | (k == q)[None])  # (B, L, S + L)
    return (~allowed).repeat_interleave(num_heads, dim=0)


class CrossAttentionLayer(nn.Module):
    def __init__(self, *, d_model: int, num_heads: int, ff_dim: int, dropout: float):
        super().__init__()
        self.norm_self = nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.norm_query = nn.LayerNorm(d_model)
        self.norm_memory = nn.LayerNorm(d_model)
        self.cross_attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.norm_ff = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ff_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_dim, d_model))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, past: torch.Tensor | None, blocked: torch.Tensor, memory: torch.Tensor,
                memory_pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, L, D); past: (B, S, D) self-attention inputs of earlier positions or None;
        blocked: (B * H, L, S + L); memory: (B, T, D); memory_pad: (B, T) True on padding.
        Returns (B, L, D) and the (B, S + L, D) self-attention inputs to keep."""
        a = self.norm_self(x)  # (B, L, D)
        kv = a if past is None else torch.cat([past, a], dim=1)  # (B, S + L, D)
        x = x + self.dropout(self.self_attn(a, kv, kv, attn_mask=blocked, need_weights=False)[0])
        mem = self.norm_memory(memory)
        read = self.cross_attn(self.norm_query(x), mem, mem, key_padding_mask=memory_pad, need_weights=False)[0]
        x = x + self.dropout(read)  # (B, L, D)
        return x + self.dropout(self.ff(self.norm_ff(x))), kv


class SpeechCrossAttention(nn.Module):
    """A stack of :class:`CrossAttentionLayer`; output has the shape of the queries."""

    def __init__(self, *, d_model: int, num_layers: int, num_heads: int, ff_dim: int | None = None,
                 dropout: float = 0.1):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"cross_attention.num_layers must be >= 1, got {num_layers}")
        if d_model % num_heads:
            raise ValueError(f"cross_attention.num_heads ({num_heads}) must divide the LLM width ({d_model})")
        self.num_heads = num_heads
        self.layers = nn.ModuleList(
            CrossAttentionLayer(d_model=d_model, num_heads=num_heads, ff_dim=ff_dim or 4 * d_model, dropout=dropout)
            for _ in range(num_layers)
        )

    @classmethod
    def from_config(cls, cfg: CrossAttentionConfig, d_model: int) -> SpeechCrossAttention:
        return cls(d_model=d_model, num_layers=cfg.num_layers, num_heads=cfg.num_heads, ff_dim=cfg.ff_dim,
                   dropout=cfg.dropout)

    def forward(self, text: torch.Tensor, speech: torch.Tensor, speech_lens: torch.Tensor, *,
                text_mask: torch.Tensor | None = None, positions: torch.Tensor | None = None,
                past: list[torch.Tensor] | None = None,
                past_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """text: (B, L, D), speech: (B, T, D), speech_lens: (B,) -> (B, L, D), and per layer the
        (B, S + L, D) self-attention inputs to pass back as ``past`` for the next positions.

        text_mask: (B, L) True on real tokens (default all); positions: (B, L) position ids
        (default 0..L-1 after the past); past / past_mask: what an earlier call returned, and its (B, S) mask."""
        B, L, D = text.shape
        if text_mask is None:
            text_mask = torch.ones(B, L, dtype=torch.bool, device=text.device)
        if positions is None:
            start = 0 if past is None else past[0].shape[1]
            positions = torch.arange(start, start + L, device=text.device)[None].expand(B, L)
        if past is not None and past_mask is None:
            past_mask = torch.ones(past[0].shape[:2], dtype=torch.bool, device=text.device)
        blocked = causal_block_mask(text_mask.bool(), None if past is None else past_mask.bool(), self.num_heads)
        memory_pad = torch.arange(speech.shape[1], device=speech.device)[None, :] >= speech_lens[:, None]  # (B, T)
        pos = sinusoidal_positions(positions, D).to(text.dtype)  # (B, L, D)
        x, kept = text + pos, []
        for i, layer in enumerate(self.layers):
            x, kv = layer(x, None if past is None else past[i], blocked, speech.to(x.dtype), memory_pad)
            kept.append(kv)
        return x - pos, kept
