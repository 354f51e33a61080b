"""Bucket and mix summary of a training stream: what the sampler really produces.

And what the training steps consumed, counted in the main process (:class:`BatchTally`,
:func:`realised_shares`), which ``data/stats.py`` logs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nemo_emmett.data.batch import TranslationBatch
from nemo_emmett.data.sampler import Batch


def padding_ratio(lengths: list[tuple[float, float]]) -> tuple[float, float, float, float]:
    """(real input, padded input, real output, padded output) elements of one batch, padded to its
    longest example on each axis. lengths: B rows of (input, output)."""
    a = np.asarray(lengths, dtype=np.float64)  # (B, 2)
    real = a.sum(axis=0)
    padded = a.max(axis=0) * len(a)
    return real[0], padded[0], real[1], padded[1]


def summarize_batches(batches: Iterable[Batch]) -> dict[str, Any]:
    per_mod: dict[str, np.ndarray] = {}
    sizes: dict[str, list[int]] = {}
    per_bucket: Counter = Counter()
    for b in batches:
        per_mod.setdefault(b.modality, np.zeros(4))
        per_mod[b.modality] += padding_ratio(b.lengths)
        sizes.setdefault(b.modality, []).append(len(b.examples))
        per_bucket[(b.modality, b.bucket)] += 1
    out: dict[str, Any] = {}
    for m, (ri, pi, ro, po) in per_mod.items():
        out[m] = {
            "batches": len(sizes[m]),
            "examples": int(sum(sizes[m])),
            "mean_batch_size": float(np.mean(sizes[m])),
            "input_padding": float(1 - ri / pi) if pi else 0.0,
            "output_padding": float(1 - ro / po) if po else 0.0,
            "batches_per_bucket": {int(k[1]): n for k, n in sorted(per_bucket.items()) if k[0] == m},
        }
    return out


def format_summary(stream: dict[str, Any], shares: dict[str, float], weights: dict[str, float],
                   stats: dict[str, Any]) -> str:
    lines = ["Realised mix (source: share / weight):"]
    lines += [f"  {n:<24} {shares.get(n, 0.0):6.3f} / {w:6.3f}" for n, w in weights.items()]
    for m, s in stream.items():
        lines.append(
            f"{m}: {s['batches']} batches, {s['examples']} examples, mean batch {s['mean_batch_size']:.1f}, "
            f"padding input {100 * s['input_padding']:.1f}% output {100 * s['output_padding']:.1f}%, "
            f"batches per bucket {s['batches_per_bucket']}"
        )
    lines.append(f"Sampler counts: {stats}")
    return "\n".join(lines)


def collated_padding(batch: TranslationBatch) -> tuple[float, float, float, float]:
    """(real input, padded input, real output, padded output) elements of one collated batch: audio
    samples or source tokens on the input side, target tokens on the output side, as the model sees them."""
    if batch.modality == "audio":
        inputs, lens = batch.audio, batch.audio_lens
    else:
        inputs, lens = batch.source_ids, batch.source_lens
    real_in = float(lens.sum()) if lens is not None else 0.0
    padded_in = float(inputs.numel()) if inputs is not None else 0.0
    real_out = float(batch.target_lens.sum()) if batch.target_lens is not None else 0.0
    padded_out = float(batch.target_ids.numel()) if batch.target_ids is not None else 0.0
    return real_in, padded_in, real_out, padded_out


@dataclass
class BatchTally:
    """What the training steps of this run consumed, counted in the main process: batches per
    (modality, bucket) since the run started, and the padding of the collated tensors since the last
    :meth:`take_padding` (so each logged value covers one logging window)."""

    batches: Counter = field(default_factory=Counter)
    """(modality, bucket) -> batches consumed."""
    padding: dict[str, np.ndarray] = field(default_factory=dict)
    """modality -> (4,) summed :func:`collated_padding` of the window."""

    def add(self, batch: TranslationBatch) -> None:
        self.batches[(batch.modality, batch.bucket)] += 1
        self.padding.setdefault(batch.modality, np.zeros(4))
        self.padding[batch.modality] += collated_padding(batch)

    def bucket_counts(self) -> dict[str, float]:
        """``batches_<modality>_bucket<k>``: batches consumed per bucket."""
        return {f"batches_{m}_bucket{k}": float(n) for (m, k), n in sorted(self.batches.items())}

    def take_padding(self) -> dict[str, float]:
        """``padding_<modality>_input`` / ``_output``: the share of padded elements over the window; a new
        window starts."""
        out = {}
        for m, (ri, pi, ro, po) in sorted(self.padding.items()):
            if pi:
                out[f"padding_{m}_input"] = float(1 - ri / pi)
            if po:
                out[f"padding_{m}_output"] = float(1 - ro / po)
        self.padding = {}
        return out


def realised_shares(slot_draws: Iterable[dict[str, int]], group_of: dict[str, str]) -> dict[str, float]:
    """``share_<source>``: each source's share of the examples drawn, summed over the slots' draw counts,
    within its group (``group_of[source]``: its modality under ``data.fusion: zip``, where each modality
    has its own multiplexer and weights; one group otherwise), so that it compares with its weight."""
    counts: Counter = Counter()
    for draws in slot_draws:
        counts.update(draws)
    totals: Counter = Counter()
    for name, c in counts.items():
        totals[group_of.get(name, "")] += c
    return {f"share_{n}": c / totals[group_of.get(n, "")] for n, c in sorted(counts.items())
            if totals[group_of.get(n, "")]}
