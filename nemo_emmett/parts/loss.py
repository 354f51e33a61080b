"""The translation loss, written once for training and validation and every model family."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def per_example_nll(logits: torch.Tensor, targets: torch.Tensor, target_lens: torch.Tensor,
                    label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed token NLL per example and its token count.

    logits: (B, U, V) predicting ``targets`` (B, U); positions at or past ``target_lens`` (B,) are padding.
    Returns (B,) losses in fp32 and (B,) token counts.
    """
    B, U, V = logits.shape
    mask = torch.arange(U, device=targets.device)[None, :] < target_lens[:, None]  # (B, U)
    tok = F.cross_entropy(logits.float().reshape(B * U, V), targets.reshape(B * U), reduction="none",
                          label_smoothing=label_smoothing).view(B, U)
    return (tok * mask).sum(dim=1), mask.sum(dim=1)


def loss_by_task(losses: torch.Tensor, counts: torch.Tensor, tasks: Sequence[str]) -> dict[str, torch.Tensor]:
    """Token-averaged loss of each task present in the batch (tasks: one name per example)."""
    out = {}
    for t in sorted(set(tasks)):
        sel = torch.tensor([x == t for x in tasks], device=losses.device)
        out[t] = losses[sel].sum() / counts[sel].sum().clamp(min=1)
    return out
