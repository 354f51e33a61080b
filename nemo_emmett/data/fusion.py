"""Step-level fusion (``data.fusion: zip``): each training step is the next audio batch and the next text batch.

NeMo fuses the samplers of several input configs with lhotse's ``ZipSampler`` (``sampler_fusion: zip``
in ``nemo/collections/common/data/lhotse/dataloader.py``). Here the two fused streams are the
modalities: one :class:`~nemo_emmett.data.sampler.Bucketing2DSampler` over a multiplexer of the audio
sources, one over the text sources, each with its own buckets, weights (renormalised within the
modality) and resume state. Both keep the multiplexer's guarantees (a stationary mix within the
modality) and the sampler's hard caps; neither waits for the other.

Resuming: the state beside a fused batch holds both samplers' states, each taken right after its
batch was formed, so a resumed slot continues both streams exactly where the step left them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from nemo_emmett.data.sampler import Batch, Bucketing2DSampler

FUSED_MODALITIES = ("audio", "text")
"""The fused streams, in the order of :class:`~nemo_emmett.data.batch.FusedBatch`'s fields."""


class ZipSampler:
    """Pairs of (audio batch, text batch), one from each modality's sampler; infinite, resumable."""

    def __init__(self, samplers: dict[str, Bucketing2DSampler]):
        if set(samplers) != set(FUSED_MODALITIES):
            raise ValueError(f"fusion needs one sampler per modality {FUSED_MODALITIES}, got {sorted(samplers)}")
        self.samplers = samplers

    def __iter__(self) -> Iterator[tuple[Batch, Batch]]:
        streams = {m: iter(s) for m, s in self.samplers.items()}
        while True:
            try:
                pair = tuple(next(streams[m]) for m in FUSED_MODALITIES)
            except StopIteration:  # an infinite (training) sampler never ends; zip semantics otherwise
                return
            yield pair

    def state_dict(self) -> dict[str, Any]:
        return {m: self.samplers[m].state_dict() for m in FUSED_MODALITIES}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_fused_state(state)
        for m in FUSED_MODALITIES:
            self.samplers[m].load_state_dict(state[m])


def is_fused_state(state: dict[str, Any]) -> bool:
    """Whether a slot's checkpointed sampler state is a :class:`ZipSampler`'s (one state per modality)."""
    return set(state) == set(FUSED_MODALITIES)


def check_fused_state(state: dict[str, Any]) -> None:
    if not is_fused_state(state):
        raise ValueError("the checkpointed data stream was made with data.fusion=none (one sampler per slot), "
                         "this run has data.fusion=zip: resume with the fusion mode it was trained with")


def sampler_states(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The :class:`Bucketing2DSampler` states inside a slot's state: itself, or a fused slot's two."""
    return [state[m] for m in FUSED_MODALITIES] if is_fused_state(state) else [state]
