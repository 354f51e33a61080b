"""Batch sizes for fused steps (``data.fusion: zip``): an audio batch and a text batch share one step's memory.

A fused step holds both batches' activations until its backward pass ends, so each modality's
buckets cannot be sized as if they had the memory alone. The split, in two searches:

1. **Text first, within a share of the room.** Every probe step is fused with a one-example
   worst-case batch of the smallest audio bucket (so the resident state is the fused run's:
   gradients and optimizer state of the speech modules too), and a text batch fits when it
   allocates at most ``fused_text_share`` (default 0.5) of the memory above the resident tensors
   (``budget - margin - resident``).
2. **Audio with the worst text batch beside it.** The text bucket whose answer measured the
   highest peak is the companion of every audio probe, at its found batch size; an audio batch
   fits when the whole fused step fits the budget, as in the unfused search.

Every fused step the sampler can form (any audio bucket with any text bucket) then fits: its
audio part was measured beside the most memory-hungry text batch, and no text batch allocates
more than that one. Text gets at most its share; audio at least the rest (more when the text
buckets' largest batch does not use all of its share). The alternative, half the budget per
modality searched apart, counts the resident model twice and wastes that much memory.
"""

from __future__ import annotations

from typing import Any

from nemo_emmett.oomptimizer.probe import Companion, StepProbe
from nemo_emmett.oomptimizer.result import OOMptimizerResult
from nemo_emmett.oomptimizer.search import search_modality, search_order


def optimize_fused_buckets(probe: StepProbe, bins: dict[str, list[tuple[float, float]]], *, text_share: float,
                           tolerance: float, max_batch_size: int, bar: Any) -> OOMptimizerResult:
    """Search the text buckets, then the audio buckets, as fused steps (see the module docstring)."""
    missing = [m for m in ("audio", "text") if not bins.get(m)]
    if missing:
        raise ValueError(f"data.fusion=zip: the OOMptimizer sizes fused steps but there are no {' or '.join(missing)} "
                         f"buckets (it has {sorted(m for m in bins if bins[m])})")
    result = OOMptimizerResult(budget=probe.budget)
    audio, text = bins["audio"], bins["text"]
    with probe.preserving_model():
        smallest = audio[search_order(audio)[-1]]
        probe.fuse_with(Companion("audio", *smallest, batch_size=1), share=text_share)
        text_rows = search_modality(probe, "text", text, tolerance=tolerance, max_batch_size=max_batch_size, bar=bar)
        worst = max(text_rows, key=lambda r: r.peak)
        probe.fuse_with(Companion("text", worst.max_input, worst.max_output, batch_size=worst.batch_size))
        result.buckets["audio"] = search_modality(probe, "audio", audio, tolerance=tolerance,
                                                  max_batch_size=max_batch_size, bar=bar)
        result.buckets["text"] = text_rows
        result.fused_text_bucket = worst.bucket
        probe.fuse_with(None)
    return result
