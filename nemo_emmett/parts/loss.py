"""The translation loss, written once for training and validation and every model family."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

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


@dataclass
class BatchLoss:
    """The loss of one batch, kept per example so that it can also be split by task (MGCM).

    Training loss = ``sum(nll) / sum(tokens)`` (token-averaged NLL over the whole batch) plus, for
    each weighted auxiliary loss, ``weight * mean over examples``."""

    nll: torch.Tensor
    """(B,) summed target-token NLL per example (fp32)."""
    tokens: torch.Tensor
    """(B,) target tokens per example."""
    tasks: Sequence[str]
    """The task of each example."""
    aux: dict[str, torch.Tensor] = field(default_factory=dict)
    """Auxiliary losses per example, (B,) each (a 0-d batch value is accepted but cannot be split by task)."""
    aux_weights: dict[str, float] = field(default_factory=dict)
    """Weight of each auxiliary loss in the training loss; one without a weight is only logged."""

    def total(self) -> torch.Tensor:
        loss = self.nll.sum() / self.tokens.sum().clamp(min=1)
        for name, weight in self.aux_weights.items():
            if name in self.aux:
                loss = loss + weight * self.aux[name].mean()
        return loss

    def logged(self) -> dict[str, torch.Tensor]:
        """Token-averaged NLL of each task and the batch mean of each auxiliary loss."""
        return {**loss_by_task(self.nll, self.tokens, self.tasks), **{k: v.mean() for k, v in self.aux.items()}}

    def task_shares(self) -> dict[str, torch.Tensor]:
        """Each task's share of :meth:`total`: its examples' NLL over *all* the batch's target tokens,
        plus their weighted auxiliary losses over the batch size. The shares sum to the total, so
        back-propagating them apart gives per-task gradients that sum to the plain one."""
        denom = self.tokens.sum().clamp(min=1)
        n = len(self.tasks)
        out = {}
        for t in sorted(set(self.tasks)):
            sel = torch.tensor([x == t for x in self.tasks], device=self.nll.device)  # (B,)
            share = self.nll[sel].sum() / denom
            for name, weight in self.aux_weights.items():
                if name not in self.aux:
                    continue
                values = self.aux[name]
                if values.dim() != 1 or values.shape[0] != n:
                    raise ValueError(f"auxiliary loss {name!r} has shape {tuple(values.shape)}; splitting the loss "
                                     f"by task needs one value per example ({n},)")
                share = share + weight * values[sel].sum() / n
            out[t] = share
        return out
