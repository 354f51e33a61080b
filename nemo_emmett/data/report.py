"""Bucket and mix summary of a training stream: what the sampler really produces."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np

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
