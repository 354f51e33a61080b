"""MGCM's conflict statistics: summed per module type over a window of steps, logged at its end.

The sums stay on the device during the window (one ``index_add_`` per step and auxiliary task),
so that the statistics cost no host sync except on the steps that log them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from nemo_emmett.mgcm.projection import PairStats

STAT_FIELDS = ("counted", "conflicts", "cos_sum", "removed_sq", "aux_sq")
"""Per module type and step: modules with both gradients nonzero, those in conflict, the sum of
their cosines, the squared norm removed, the squared norm of the auxiliary gradient."""


def stat_rows(pairs: torch.Tensor) -> torch.Tensor:
    """(G, 3) ``[dot, |g_p|^2, |g_a|^2]`` per module -> (G, len(STAT_FIELDS)) rows to sum."""
    s = PairStats(*pairs.unbind(1))  # (G,) each
    counted = (s.primary_sq > 0) & (s.aux_sq > 0)
    conflict = counted & (s.dot < 0)
    return torch.stack([counted.float(), conflict.float(), s.cos, s.removed_sq, s.aux_sq], dim=1)  # (G, 5)


def summarize(sums: Sequence[float]) -> dict[str, float | None]:
    """Window statistics from summed ``STAT_FIELDS``: the share of modules (with both gradients
    nonzero) in conflict, their mean cosine, and the share of the auxiliary gradient's norm that
    the projection removed. None where undefined."""
    counted, conflicts, cos_sum, removed_sq, aux_sq = sums
    return {
        "conflict_share": conflicts / counted if counted else None,
        "mean_cos": cos_sum / counted if counted else None,
        "norm_removed": (removed_sq / aux_sq) ** 0.5 if aux_sq > 0 else None,
    }


class StatsWindow:
    """Sums of :func:`stat_rows` per auxiliary task and module type since the last :meth:`flush`."""

    def __init__(self, group_types: Sequence[str]):
        """``group_types``: the type of each module (in group order)."""
        self.type_names = list(dict.fromkeys(group_types))
        self.group_type_index = torch.tensor([self.type_names.index(t) for t in group_types])  # (G,)
        self._sums: dict[str, torch.Tensor] = {}  # aux task -> (num types, len(STAT_FIELDS))

    def record(self, stats: dict[str, torch.Tensor]) -> None:
        """Add one step's (G, 3) ``[dot, |g_p|^2, |g_a|^2]`` per auxiliary task."""
        for task, pairs in stats.items():
            rows = stat_rows(pairs)  # (G, 5)
            window = self._sums.setdefault(task, rows.new_zeros(len(self.type_names), len(STAT_FIELDS)))
            window.index_add_(0, self.group_type_index.to(rows.device), rows)  # (types, 5)

    def __bool__(self) -> bool:
        return bool(self._sums)

    def flush(self, primary_task: str) -> dict[str, float]:
        """The window's metrics, ``mgcm/{primary}-{aux}/{statistic}`` over every module and
        ``.../{statistic}/{type}`` per module type (undefined ones left out); starts a new window."""
        out = {}
        for task, window in self._sums.items():
            w = window.tolist()
            overall = [sum(col) for col in zip(*w)]
            for values, suffix in [(overall, ""), *((row, f"/{t}") for t, row in zip(self.type_names, w))]:
                for name, value in summarize(values).items():
                    if value is not None:
                        out[f"mgcm/{primary_task}-{task}/{name}{suffix}"] = value
        self._sums = {}
        return out
