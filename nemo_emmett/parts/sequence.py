"""Packing variable-length pieces (speech, prompt, source text) into one padded sequence."""

from __future__ import annotations

import torch


def concat_padded(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate per example, without the padding between pieces.

    parts: [(x_i (B, T_i, D), lens_i (B,)), ...] -> (B, L, D) with L = max_b sum_i lens_i[b],
    each example's valid frames left-aligned in order, and the (B,) total lengths.
    """
    B, D = parts[0][0].shape[0], parts[0][0].shape[2]
    total = sum(lens for _, lens in parts)  # (B,)
    ref = parts[0][0]
    out = ref.new_zeros(B, int(total.max()), D)
    offset = torch.zeros_like(total)
    for x, lens in parts:
        T = x.shape[1]
        steps = torch.arange(T, device=x.device)[None, :]  # (1, T)
        valid = steps < lens[:, None]  # (B, T)
        rows = torch.arange(B, device=x.device)[:, None].expand(B, T)[valid]
        cols = (offset[:, None] + steps).expand(B, T)[valid]
        out[rows, cols] = x[valid].to(out.dtype)
        offset = offset + lens
    return out, total


def lengths_to_mask(lens: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """(B,) lengths -> (B, L) bool mask, True on valid positions."""
    max_len = int(lens.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lens.device)[None, :] < lens[:, None]


def right_align(x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    """Move each row's first ``lens[b]`` entries to the end (left padding, as decoder-only prompts
    want: the answer then starts at the same column in every row). x: (B, L, ...) -> (B, L, ...)."""
    B, L = x.shape[:2]
    shift = (L - lens)[:, None]  # (B, 1)
    src = (torch.arange(L, device=x.device)[None, :] - shift) % L  # (B, L): column each output reads
    return x.gather(1, src.view(B, L, *([1] * (x.dim() - 2))).expand_as(x))
