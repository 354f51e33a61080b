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
    each weighted auxiliary loss, ``weight * mean over the examples that have it``. A fused step
    (``data.fusion: zip``) is :meth:`concat` of its audio and text batches' losses: the loss of one
    batch holding both batches' examples (every target token weighs the same in either modality; CTC
    is averaged over the audio examples, the only ones that have it)."""

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
    parts: tuple[BatchLoss, ...] = ()
    """The batches' own losses when this one joins several (:meth:`concat`; ``aux`` is then theirs):
    task shares are taken per part, so that a task's backward pass never enters another batch's graph."""

    @classmethod
    def concat(cls, parts: Sequence[BatchLoss]) -> BatchLoss:
        """One loss over the examples of ``parts``, in order (a fused step's audio and text batches)."""
        for p in parts:
            for name, values in p.aux.items():
                if values.dim() != 1 or values.shape[0] != len(p.tasks):
                    raise ValueError(f"auxiliary loss {name!r} has shape {tuple(values.shape)}; joining losses needs "
                                     f"one value per example ({len(p.tasks)},)")
        return cls(torch.cat([p.nll for p in parts]), torch.cat([p.tokens for p in parts]),  # (B_1 + B_2,)
                   [t for p in parts for t in p.tasks], aux_weights={k: w for p in parts for k, w in p.aux_weights.items()},
                   parts=tuple(parts))

    def _segments(self) -> tuple[BatchLoss, ...]:
        return self.parts or (self,)

    def aux_names(self) -> list[str]:
        return sorted({k for p in self._segments() for k in p.aux})

    def aux_mean(self, name: str) -> torch.Tensor:
        """Mean of auxiliary loss ``name`` over the examples that have it."""
        have = [p.aux[name] for p in self._segments() if name in p.aux]
        if len(have) == 1:
            return have[0].mean()
        return sum(v.sum() for v in have) / sum(v.shape[0] for v in have)

    def total(self) -> torch.Tensor:
        loss = self.nll.sum() / self.tokens.sum().clamp(min=1)
        for name in self.aux_names():
            if name in self.aux_weights:
                loss = loss + self.aux_weights[name] * self.aux_mean(name)
        return loss

    def logged(self) -> dict[str, torch.Tensor]:
        """Token-averaged NLL of each task and the mean of each auxiliary loss."""
        return {**loss_by_task(self.nll, self.tokens, self.tasks), **{k: self.aux_mean(k) for k in self.aux_names()}}

    def task_shares(self) -> dict[str, torch.Tensor]:
        """Each task's share of :meth:`total`: its examples' NLL over *all* the target tokens (of every
        part), plus their weighted auxiliary losses over the examples that have each. The shares sum to
        the total, so back-propagating them apart gives per-task gradients that sum to the plain one."""
        denom = self.tokens.sum().clamp(min=1)
        segments = self._segments()
        counts = {name: sum(p.aux[name].shape[0] for p in segments if name in p.aux if p.aux[name].dim() == 1)
                  for name in self.aux_names()}
        out: dict[str, torch.Tensor] = {}
        for t in sorted(set(self.tasks)):
            for p in segments:
                if t not in p.tasks:
                    continue
                sel = torch.tensor([x == t for x in p.tasks], device=p.nll.device)  # (B_part,)
                share = p.nll[sel].sum() / denom
                for name, values in p.aux.items():
                    if name not in self.aux_weights:
                        continue
                    if values.dim() != 1 or values.shape[0] != len(p.tasks):
                        raise ValueError(f"auxiliary loss {name!r} has shape {tuple(values.shape)}; splitting the "
                                         f"loss by task needs one value per example ({len(p.tasks)},)")
                    share = share + self.aux_weights[name] * values[sel].sum() / counts[name]
                out[t] = out[t] + share if t in out else share
        return out
