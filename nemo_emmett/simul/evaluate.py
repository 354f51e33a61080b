"""Quality against latency of one model: simultaneous decoding at several wait-k lags and offline, scored
with BLEU, AL, LAAL, DAL and AP (computation-aware too) per lag, the points of a BLEU-vs-latency curve.

    rows = latency_curve(model, audios, references, ks=[1, 3, 5, 7], source_lang="en", target_lang="de",
                         sample_rate=16000)
    # [{"k": 1, "BLEU": ..., "AL": ..., "LAAL": ..., ...}, ..., {"k": "offline", ...}]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm import tqdm

from nemo_emmett.simul.latency import SimulInstance, score_directions
from nemo_emmett.simul.policies import build_policy
from nemo_emmett.simul.session import simul_translate

OFFLINE_K = 1_000_000
"""A wait-k lag no utterance reaches: the whole source is read before the first word (the offline point)."""


def latency_curve(model: Any, audios: Sequence[torch.Tensor], references: Sequence[str], *, ks: Sequence[int],
                  source_lang: str, target_lang: str, sample_rate: int, stride: int | None = None,
                  chunk_samples: int | None = None, offline: bool = True,
                  progress: bool = True) -> list[dict[str, Any]]:
    """One row per lag in ``ks`` (then ``"offline"``): ``k`` and the scores of :func:`score_directions`
    for ``source_lang-target_lang``. ``stride``: frames per unit (default: ``model.simul.stride_frames``)."""
    if len(audios) != len(references):
        raise ValueError(f"latency_curve: {len(audios)} audios but {len(references)} references")
    if not audios:
        raise ValueError("latency_curve: no utterances to decode")
    bad = [k for k in ks if not isinstance(k, int) or k <= 0]
    if bad:
        raise ValueError(f"latency_curve: ks must be positive integers, got {bad}")
    stride = stride or model.cfg.simul.stride_frames
    lags: list[int | str] = [*ks, *(["offline"] if offline else [])]
    direction = f"{source_lang}-{target_lang}"
    rows = []
    for lag in tqdm(lags, desc="latency curve", total=len(lags), disable=not progress):
        policy = build_policy("wait-k", k=OFFLINE_K if lag == "offline" else lag, stride=stride)
        out = simul_translate(model, list(audios), policy, source_lang=source_lang, target_lang=target_lang,
                              sample_rate=sample_rate, chunk_samples=chunk_samples)
        instances = [SimulInstance(prediction=hyp, delays=delays, elapsed=elapsed, reference=ref,
                                   source_length=1000.0 * audio.numel() / sample_rate, direction=direction)
                     for (hyp, delays, elapsed), ref, audio in zip(out, references, audios)]
        rows.append({"k": lag, **score_directions(instances)[direction]})
    return rows
