"""The synthetic worst-case batch of a bucket, on which the OOMptimizer's probe measures memory.

It is a :class:`~nemo_emmett.data.batch.TranslationBatch` like a collated one, so the probe runs
the model's real training step; only its contents are random."""

from __future__ import annotations

import torch

from nemo_emmett.data.batch import TranslationBatch
from nemo_emmett.data.dataset import TextIds


def worst_case_batch(modality: str, batch_size: int, max_input: float, max_output: float, *, text: TextIds,
                     vocab_size: int, prompt_len: int, token_equivalent_duration: float, sampling_rate: int,
                     seed: int = 0, direction: tuple[str, str, str] | None = None) -> TranslationBatch:
    """A batch in which every example is as long as the bucket allows: ``max_input`` (token-equivalent
    frames of audio, or source ids) and ``max_output`` target ids. Bucket edges are in the units of
    the collated batch (``data/lengths.py``: source ids with their specials, target ids with EOS and a
    forced language code), so the worst case is exactly that long: its last target id is EOS, not an
    extra one. ``prompt_len``: the longest prompt of the run (``measure.prompt_length``, same tokenizer).
    Token ids avoid the special ids, so no position is masked as padding.
    ``direction``: (task, source_lang, target_lang) of every example (a modular model runs that task's
    components); default ``st``/``mt`` from ``xx`` to ``yy``."""
    g = torch.Generator().manual_seed(seed)
    B = batch_size
    task, src, tgt = direction or ("st" if modality == "audio" else "mt", "xx", "yy")
    n_out = max(1, int(max_output))
    n_in = max(1, int(max_input))
    specials = {text.pad_id, getattr(text, "eos_id", -1)}
    low = max(specials) + 1 if max(specials) + 1 < vocab_size else 0

    def ids(length: int, last: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randint(low, vocab_size, (B, length), generator=g)  # (B, length)
        if last is not None:
            x[:, -1] = last
        return x, torch.full((B,), length, dtype=torch.long)

    tensors: dict[str, torch.Tensor] = {}
    tensors["target_ids"], tensors["target_lens"] = ids(n_out, last=getattr(text, "eos_id", None))  # EOS counted
    tensors["prompt_ids"], tensors["prompt_lens"] = ids(max(1, prompt_len))
    if modality == "audio":
        samples = max(1, int(round(max_input * token_equivalent_duration * sampling_rate)))
        tensors["audio"] = torch.randn(B, samples, generator=g) * 0.1  # (B, T)
        tensors["audio_lens"] = torch.full((B,), samples, dtype=torch.long)
        # the transcript is unbounded by the bucket: as long as CTC allows
        tensors["transcript_ids"], tensors["transcript_lens"] = ids(n_in)
    else:
        tensors["source_ids"], tensors["source_lens"] = ids(n_in)
    return TranslationBatch(modality=modality, bucket=-1, ids=[f"worst-case-{i}" for i in range(B)],
                            tasks=[task] * B, source_langs=[src] * B, target_langs=[tgt] * B, source_texts=[""] * B,
                            target_texts=[""] * B, **tensors)
