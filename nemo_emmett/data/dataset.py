"""Iterable datasets that run multiplexer -> 2D bucketing -> collation inside each dataloader worker.

Each (rank, worker) slot reads a disjoint part of every source. With ``data.fusion: zip`` a slot runs
one sampler per modality and yields fused steps (``data/fusion.py``). Training batches come with the
sampler state of their slot (:class:`StreamedBatch`) so that the main process can checkpoint the
stream without reaching into worker processes (see ``EmmettDataModule``)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from lhotse import CutSet
from lhotse.dataset.collation import collate_audio, collate_vectors
from torch.utils.data import IterableDataset, get_worker_info

import nemo_emmett.data.examples as ex_
from nemo_emmett.data.batch import FusedBatch, TranslationBatch
from nemo_emmett.data.batch_groups import GroupOf
from nemo_emmett.data.bucketing import BucketGrid
from nemo_emmett.data.fusion import FUSED_MODALITIES, ZipSampler, is_fused_state
from nemo_emmett.data.lengths import sampling_kw
from nemo_emmett.data.multiplexer import Multiplexer
from nemo_emmett.data.sampler import Batch, Bucketing2DSampler, ModalityBuckets
from nemo_emmett.data.shar import list_shards
from nemo_emmett.data.sources import SourceSpec
from nemo_emmett.data.stream import ShardedStream
from nemo_emmett.data.transforms import SourceTransforms


class TextIds(Protocol):
    """What collation needs of a tokenizer (``nemo_emmett.parts.text_processor.TextProcessor``)."""

    pad_id: int

    def encode(self, text: str) -> list[int]: ...
    def source_ids(self, text: str, source_lang: str | None = None) -> list[int]: ...
    def target_ids(self, text: str, target_lang: str | None = None) -> list[int]: ...
    # With the subword_sampling transform, source_ids and target_ids also take ``sampling=`` (data/lengths.py).
    def prompt_ids(self, *, task: str, source_lang: str, target_lang: str) -> list[int]: ...


def pad_ids(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """List of B id lists -> (B, T_max) long tensor padded with ``pad_id``, and (B,) lengths."""
    lens = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    return collate_vectors([torch.as_tensor(s, dtype=torch.long) for s in seqs], padding_value=pad_id), lens


def collate(batch: Batch, *, sampling_rate: int, text: TextIds | None = None) -> TranslationBatch:
    """Tensors and metadata of one homogeneous batch (fields: :class:`TranslationBatch`). Audio gets
    ``audio``; with ``text``, every batch gets ``target_ids`` and ``prompt_ids``, and text batches
    ``source_ids``, audio batches ``transcript_ids`` (the source text's tokens alone, for CTC).

    The ids are the tokenizer's direction-aware ones (``source_ids``/``target_ids`` with each
    example's languages: specials, EOS and forced language codes included), the same that
    bucketing counts (``data/lengths.py`` ``TokenCounter``): ``source_lens`` and ``target_lens`` are
    the example's bucketing lengths. An example that carries a subword sampling (the training-only
    ``subword_sampling`` transform, ``data/subword.py``) is encoded in its sampled segmentation, as it
    was measured; the CTC transcript keeps the best one."""
    exs = batch.examples
    ids = [ex_.example_id(e) for e in exs]
    tasks = [ex_.task(e) for e in exs]
    source_langs = [ex_.source_lang(e) for e in exs]
    target_langs = [ex_.target_lang(e) for e in exs]
    source_texts = [ex_.source_text(e) for e in exs]
    target_texts = [ex_.target_text(e) for e in exs]
    samplings = [sampling_kw(ex_.subword_sampling(e)) for e in exs]
    tensors: dict[str, torch.Tensor] = {}
    if batch.modality == "audio":
        cuts = CutSet.from_cuts(c if c.sampling_rate == sampling_rate else c.resample(sampling_rate) for c in exs)
        try:
            tensors["audio"], tensors["audio_lens"] = collate_audio(cuts)  # (B, T), (B,)
        except Exception as e:
            origins = sorted({str(getattr(c, "shard_origin", "?")) for c in exs})
            raise RuntimeError(f"could not load audio of cuts {ids[:5]}... from {origins}: {e}") from e
    if text is not None:
        pad = text.pad_id
        targets = [text.target_ids(t, target_lang=g, **k) for t, g, k in zip(target_texts, target_langs, samplings)]
        tensors["target_ids"], tensors["target_lens"] = pad_ids(targets, pad)  # (B, U), (B,)
        prompts = [text.prompt_ids(task=t, source_lang=s, target_lang=g)
                   for t, s, g in zip(tasks, source_langs, target_langs)]
        tensors["prompt_ids"], tensors["prompt_lens"] = pad_ids(prompts, pad)  # (B, P), (B,)
        if batch.modality == "text":
            sources = [text.source_ids(t, source_lang=s, **k) for t, s, k in zip(source_texts, source_langs, samplings)]
            tensors["source_ids"], tensors["source_lens"] = pad_ids(sources, pad)  # (B, S), (B,)
        else:  # the transcript, for an auxiliary loss on the speech encoder (CTC)
            tensors["transcript_ids"], tensors["transcript_lens"] = pad_ids([text.encode(t) for t in source_texts], pad)
    return TranslationBatch(modality=batch.modality, bucket=batch.bucket, ids=ids, tasks=tasks,
                            source_langs=source_langs, target_langs=target_langs, source_texts=source_texts,
                            target_texts=target_texts, **tensors)


@dataclass
class SlotState:
    """Where one (rank, worker) slot's sampler stands after emitting a batch."""

    slot: int
    """The slot (:func:`worker_slot`)."""
    num_slots: int
    """Slots of the whole run (ranks x workers); a resume must have as many."""
    sampler: dict[str, Any]
    """``Bucketing2DSampler.state_dict()`` right after the batch was formed (a fused slot's
    ``ZipSampler.state_dict()``: one such state per modality)."""
    draws: dict[str, int] = field(default_factory=dict)
    """Examples drawn so far per source by the slot's multiplexers (:func:`source_draws`), for the
    realised mix (``data/stats.py``). Not checkpointed: a restored multiplexer's counts carry on."""


def source_draws(sampler: Bucketing2DSampler | ZipSampler) -> dict[str, int]:
    """Examples each source's multiplexer drew so far (the live counts, not the resume snapshot's)."""
    samplers = sampler.samplers.values() if isinstance(sampler, ZipSampler) else [sampler]
    return {n: int(c) for s in samplers for n, c in zip(s.mux.names, s.mux.counts)}


@dataclass
class StreamedBatch:
    """A training batch and the resume state of the slot that made it. They travel side by side so
    that the main process can checkpoint the stream without reaching into worker processes;
    ``EmmettDataModule.on_before_batch_transfer`` records the state and hands the model the batch."""

    batch: TranslationBatch | FusedBatch
    state: SlotState


def worker_slot(rank: int, world_size: int, offset: int = 0) -> tuple[int, int]:
    """(slot, num_slots) of the calling dataloader worker. ``offset`` rotates worker roles so that,
    after a resume, the first worker to yield plays the slot whose turn it was."""
    info = get_worker_info()
    wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
    return rank * nw + (wid + offset) % nw, world_size * nw


def source_slot(readers: list[tuple[int, int]] | None, i: int, slot: int, num_slots: int,
                world_size: int) -> tuple[int, int]:
    """Source ``i``'s (slot, num_slots) for a (rank, worker) slot of :func:`worker_slot`: split among
    the ranks that read it, ``readers[i] = (this rank's index among them, how many)``; None: all ranks."""
    if readers is None:
        return slot, num_slots
    nw = num_slots // world_size
    index, count = readers[i]
    return index * nw + slot % nw, count * nw


@dataclass
class TrainBatches(IterableDataset):
    specs: list[SourceSpec]
    weights: list[float]
    buckets: dict[str, ModalityBuckets]
    measure: Callable
    seed: int
    rank: int = 0
    world_size: int = 1
    jitter: float = 0.5
    shuffle_buffer: int = 1000
    max_wait: int = 20000
    sampling_rate: int = 16000
    text: TextIds | None = None
    introduce_at_draw: list[int] | None = None
    """Curriculum: per source, the slot's draw count at which it joins the mix (``DataPlan``)."""
    resume: dict[str, Any] | None = None
    """{"offset": int, "slots": {slot: sampler state}} from EmmettDataModule.state_dict()."""
    readers: list[tuple[int, int]] | None = None
    """Per source, (this rank's index among the ranks reading it, how many read it) when ranks read
    different sources (component-aware training); None: every rank reads every source."""
    fusion: str = "none"
    """``data.fusion``: ``zip`` yields :class:`FusedBatch` steps from one sampler per modality (``data/fusion.py``)."""
    group_of: GroupOf | None = None
    """``data.batch_by``: examples share a batch only within their group (``data/batch_groups.py``)."""

    def __post_init__(self) -> None:
        super().__init__()

    def _sampler(self, keep: list[int], slot: int, num_slots: int) -> Bucketing2DSampler:
        """The bucketing sampler over a multiplexer of the sources ``keep`` (indices into ``specs``)."""
        splits = {i: source_slot(self.readers, i, slot, num_slots, self.world_size) for i in keep}
        streams = [
            ShardedStream(self.specs[i].name, list_shards(self.specs[i].path), seed=self.seed, slot=splits[i][0],
                          num_slots=splits[i][1], shuffle_buffer=self.shuffle_buffer)
            for i in keep
        ]
        introduce = [self.introduce_at_draw[i] for i in keep] if self.introduce_at_draw else None
        mux = Multiplexer(streams, [self.weights[i] for i in keep], seed=self.seed, slot=slot, jitter=self.jitter,
                          introduce_at_draw=introduce)
        transforms = SourceTransforms(tuple(self.specs[i].name for i in keep),
                                      tuple(self.specs[i].transforms or () for i in keep), seed=self.seed, slot=slot)
        return Bucketing2DSampler(buckets=self.buckets, measure=self.measure, mux=mux, max_wait=self.max_wait,
                                  transforms=None if transforms.empty else transforms, group_of=self.group_of)

    def sampler_for_slot(self, slot: int, num_slots: int) -> Bucketing2DSampler | ZipSampler:
        everything = list(range(len(self.specs)))
        if self.fusion == "zip":
            by_modality = {m: [i for i in everything if self.specs[i].modality == m] for m in FUSED_MODALITIES}
            missing = [m for m, keep in by_modality.items() if not keep]
            if missing:
                raise ValueError(f"data.fusion=zip: this rank reads no {' or '.join(missing)} training source "
                                 f"(it reads {[s.name for s in self.specs]}); a fused step needs both modalities")
            sampler = ZipSampler({m: self._sampler(keep, slot, num_slots) for m, keep in by_modality.items()})
        else:
            sampler = self._sampler(everything, slot, num_slots)
        if self.resume is not None:
            if self.resume.get("num_slots") != num_slots:
                raise ValueError(
                    f"checkpointed data stream used {self.resume.get('num_slots')} rank x worker slots, this run has "
                    f"{num_slots}: resume with the same world size and data.num_workers"
                )
            state = self.resume["slots"].get(slot)
            if state is not None:
                if self.fusion != "zip" and is_fused_state(state):
                    raise ValueError("the checkpointed data stream was made with data.fusion=zip, this run has "
                                     "data.fusion=none: resume with the fusion mode it was trained with")
                sampler.load_state_dict(state)  # a ZipSampler refuses an unfused state
        return sampler

    def __iter__(self) -> Iterator[StreamedBatch]:
        offset = self.resume["offset"] if self.resume else 0
        slot, num_slots = worker_slot(self.rank, self.world_size, offset)
        sampler = self.sampler_for_slot(slot, num_slots)
        for batch in sampler:
            if isinstance(batch, tuple):  # fused: (audio, text)
                out = FusedBatch(*(collate(b, sampling_rate=self.sampling_rate, text=self.text) for b in batch))
            else:
                out = collate(batch, sampling_rate=self.sampling_rate, text=self.text)
            yield StreamedBatch(out, SlotState(slot, num_slots, sampler.state_dict(), source_draws(sampler)))


@dataclass
class ValidationBatches(IterableDataset):
    """One finite pass: every example of every source exactly once over all ranks and workers."""

    specs: list[SourceSpec]
    measure: Callable
    batch_size: int = 32
    rank: int = 0
    world_size: int = 1
    sampling_rate: int = 16000
    text: TextIds | None = None
    readers: list[tuple[int, int]] | None = None
    """As in :class:`TrainBatches`."""

    def __post_init__(self) -> None:
        super().__init__()

    def __iter__(self) -> Iterator[TranslationBatch]:
        slot, num_slots = worker_slot(self.rank, self.world_size)
        splits = [source_slot(self.readers, i, slot, num_slots, self.world_size) for i in range(len(self.specs))]
        streams = [
            ShardedStream(s.name, list_shards(s.path), seed=0, slot=s_slot, num_slots=s_num,
                          shuffle=False, infinite=False)
            for s, (s_slot, s_num) in zip(self.specs, splits)
        ]
        one_bucket = {m: ModalityBuckets(BucketGrid([(float("inf"), float("inf"))]), [self.batch_size])
                      for m in ("audio", "text")}
        sampler = Bucketing2DSampler(buckets=one_bucket, measure=self.measure,
                                     finite_source=itertools.chain.from_iterable(streams))
        for batch in sampler:
            yield collate(batch, sampling_rate=self.sampling_rate, text=self.text)
