"""Pre-norm transformer layer stacks with a KV cache: the layer-stack components of modular models.

A :class:`LayerStack` is a few layers plus a final norm, so that stacks can be chained in any
combination a task names (each stack hands on normalised states). Decoder stacks take a
:class:`KVCache` for one-token-at-a-time decoding."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.h, self.dropout = n_heads, dropout
        self.q, self.k, self.v, self.o = (nn.Linear(d_model, d_model) for _ in range(4))

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        return x.view(B, T, self.h, D // self.h).transpose(1, 2)  # (B, T, D) -> (B, H, T, D/H)

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
                causal: bool = False) -> torch.Tensor:
        """x: (B, T, D) queries; k, v: (B, H, S, D/H) projected keys and values; mask: (B, 1|T, S) True
        where a query may attend."""
        q = self.heads(self.q(x))  # (B, H, T, D/H)
        attn_mask = None if mask is None else mask[:, None]  # (B, 1, 1|T, S)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal and mask is None,
                                             dropout_p=self.dropout if self.training else 0.0)
        B, H, T, Dh = out.shape
        return self.o(out.transpose(1, 2).reshape(B, T, H * Dh))  # (B, T, D)

    def kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.k(x)), self.heads(self.v(x))


class FeedForward(nn.Sequential):
    def __init__(self, d_model: int, d_ff: int, dropout: float):
        super().__init__(nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model))


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = Attention(d_model, n_heads, dropout)
        self.ff = FeedForward(d_model, d_ff, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B, S, D); mask: (B, S) True on valid positions."""
        h = self.norm1(x)
        x = x + self.drop(self.attn(h, *self.attn.kv(h), mask=mask[:, None, :]))
        return x + self.drop(self.ff(self.norm2(x)))


@dataclass
class KVCache:
    """Per decoder layer: self-attention keys/values of the tokens so far, cross-attention keys/values of
    the memory (computed once); one row per hypothesis."""

    self_kv: list[tuple[torch.Tensor, torch.Tensor] | None] = field(default_factory=list)
    cross_kv: list[tuple[torch.Tensor, torch.Tensor] | None] = field(default_factory=list)

    def select(self, index: torch.Tensor) -> KVCache:
        def pick(kv):
            return None if kv is None else (kv[0][index], kv[1][index])
        return KVCache([pick(kv) for kv in self.self_kv], [pick(kv) for kv in self.cross_kv])


class DecoderLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(d_model) for _ in range(3))
        self.self_attn = Attention(d_model, n_heads, dropout)
        self.cross_attn = Attention(d_model, n_heads, dropout)
        self.ff = FeedForward(d_model, d_ff, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor,
                cache: KVCache | None = None, index: int = 0) -> torch.Tensor:
        """x: (B, U, D) target states (U = 1 per step with ``cache``); memory: (B, S, D); memory_mask: (B, S).
        ``cache`` slot ``index`` holds this layer's keys and values and is extended in place."""
        h = self.norm1(x)
        k, v = self.self_attn.kv(h)  # (B, H, U, D/H)
        if cache is not None:
            if cache.self_kv[index] is not None:
                pk, pv = cache.self_kv[index]
                k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
            cache.self_kv[index] = (k, v)
        # Training sees the whole target (causal mask); a cached step's one query sees every past key.
        x = x + self.drop(self.self_attn(h, k, v, causal=cache is None))
        h = self.norm2(x)
        if cache is not None and cache.cross_kv[index] is not None:
            mk, mv = cache.cross_kv[index]
        else:
            mk, mv = self.cross_attn.kv(memory)  # (B, H, S, D/H)
            if cache is not None:
                cache.cross_kv[index] = (mk, mv)
        x = x + self.drop(self.cross_attn(h, mk, mv, mask=memory_mask[:, None, :]))
        return x + self.drop(self.ff(self.norm3(x)))


class LayerStack(nn.Module):
    """``num_layers`` encoder or decoder layers and a final norm: one named component."""

    def __init__(self, kind: str, *, num_layers: int, d_model: int, n_heads: int, d_ff: int, dropout: float):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"a layer stack needs at least one layer, got {num_layers}")
        layer = EncoderLayer if kind == "encoder" else DecoderLayer
        self.kind = kind
        self.layers = nn.ModuleList(layer(d_model, n_heads, d_ff, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, memory: torch.Tensor | None = None,
                cache: KVCache | None = None, first_index: int = 0) -> torch.Tensor:
        """Encoder: x (B, S, D), mask (B, S). Decoder: x (B, U, D), ``mask`` the memory's (B, S), memory
        (B, S, D); cache slots ``first_index ...`` belong to this stack's layers."""
        for i, layer in enumerate(self.layers):
            x = layer(x, mask) if self.kind == "encoder" else layer(x, memory, mask, cache, first_index + i)
        return self.norm(x)


def sinusoidal_positions(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """(..., ) integer positions -> (..., dim) sine/cosine encodings (no parameters: any length works)."""
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    angles = positions.float()[..., None] * freq  # (..., half)
    enc = torch.cat([angles.sin(), angles.cos()], dim=-1)
    return F.pad(enc, (0, dim - 2 * half))
