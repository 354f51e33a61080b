"""Lightning DataModule: train and validation loaders from ``cfg.data``, with a resumable stream.

Training batches are produced inside dataloader workers; each comes with its slot's sampler state
(:class:`~nemo_emmett.data.dataset.StreamedBatch`).
``on_before_batch_transfer`` (main process) keeps the state of the last *consumed* batch of
every slot, and ``state_dict`` stores them with how many batches were consumed, which tells the
next run which worker's turn it is (the DataLoader takes workers round-robin)."""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from nemo_emmett.data.batch import FusedBatch, TranslationBatch, batch_parts
from nemo_emmett.data.batch_groups import group_of
from nemo_emmett.data.config import DataConfig, parse_data_config
from nemo_emmett.data.dataset import StreamedBatch, TextIds, TrainBatches, ValidationBatches
from nemo_emmett.data.fusion import sampler_states
from nemo_emmett.data.plan import DataPlan, build_plan, with_batch_sizes
from nemo_emmett.data.report import BatchTally, realised_shares
from nemo_emmett.data.sources import sources_for_rank
from nemo_emmett.parts.process import exit_with_parent

log = logging.getLogger(__name__)


class EmmettDataModule(pl.LightningDataModule):
    def __init__(self, cfg: DictConfig | dict | DataConfig, *, text: TextIds,
                 rank_directions: list[list[str]] | None = None, batch_groups: dict[str, str] | None = None):
        """``text``: the run's tokenizer (``nemo_emmett/startup.py`` resolves it before the data module
        and the model): bucketing counts tokens with it and collation turns texts into ids. ``cfg``
        must list its sources (the start-up fills in the demo corpus's).
        ``rank_directions``: the directions (``mt:en-de``) each rank trains, when ranks train
        different tasks (``trainer.strategy: component_sync``): a rank then reads only the sources of
        its directions, split with the other ranks that train them. None: every rank reads every source.
        ``batch_groups``: each direction's group of directions that run the same components, for
        ``data.batch_by: components`` (:func:`~nemo_emmett.data.batch_groups.component_groups`)."""
        super().__init__()
        self.cfg = parse_data_config(cfg)
        self.text = text
        self.rank_directions = rank_directions
        self.batch_groups = batch_groups
        self.plan: DataPlan | None = None
        self._slot_states: dict[int, dict[str, Any]] = {}
        self._slot_draws: dict[int, dict[str, int]] = {}
        self._num_slots: int | None = None
        self._consumed = 0
        self._resume: dict[str, Any] | None = None
        self.tally = BatchTally()
        """Batches per bucket and padding of the training batches consumed by this run (not checkpointed)."""

    # ---- set-up ----------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.plan is None:
            self.plan = build_plan(self.cfg, self.text)
            log.info("\n%s", self.plan.summary())

    def set_batch_sizes(self, modality: str, batch_sizes: list[int]) -> None:
        """Replace the batch sizes of ``modality``'s buckets (the OOMptimizer's answer); loaders built
        after this call use them."""
        self.setup()
        self.plan = with_batch_sizes(self.plan, modality, batch_sizes)
        log.info("%s batch sizes per bucket: %s", modality, self.plan.buckets[modality].batch_sizes)

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer  # Lightning sets it in fit; None before
        if trainer is not None:
            return trainer.global_rank, trainer.world_size
        return 0, 1

    def _rank_sources(self, specs: list, rank: int, *, required: bool = True
                      ) -> tuple[list[int], list[tuple[int, int]] | None]:
        """Indices of the sources this rank reads and, per source, its split among their readers."""
        if self.rank_directions is None:
            return list(range(len(specs))), None
        mine = sources_for_rank([s.direction for s in specs], self.rank_directions, rank, required=required)
        return [i for i, _, _ in mine], [(k, n) for _, k, n in mine]

    def train_dataset(self) -> TrainBatches:
        self.setup()
        rank, world = self._rank_world()
        c, p = self.cfg, self.plan
        keep, readers = self._rank_sources(p.train, rank)
        total = sum(p.weights[i] for i in keep)
        return TrainBatches(
            specs=[p.train[i] for i in keep], weights=[p.weights[i] / total for i in keep], buckets=p.buckets,
            measure=p.measure, seed=c.seed, rank=rank, world_size=world, jitter=c.jitter,
            shuffle_buffer=c.shuffle_buffer, max_wait=c.max_wait, sampling_rate=c.sampling_rate, text=self.text,
            resume=self._resume, introduce_at_draw=[p.introduce_at_draw[i] for i in keep] if p.introduce_at_draw
            else p.introduce_at_draw, readers=readers, fusion=c.fusion,
            group_of=group_of(c.batch_by, self.batch_groups),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset())

    def val_dataloader(self) -> DataLoader:
        self.setup()
        rank, world = self._rank_world()
        keep, readers = self._rank_sources(self.plan.validation, rank, required=False)
        ds = ValidationBatches(specs=[self.plan.validation[i] for i in keep], measure=self.plan.measure,
                               batch_size=self.cfg.val_batch_size, rank=rank, world_size=world,
                               sampling_rate=self.cfg.sampling_rate, text=self.text, readers=readers)
        return self._loader(ds)

    def num_val_examples(self) -> int | None:
        """Examples in one validation pass of this rank (the progress bar's total): exact on one rank;
        with several, the rank's even share of each source (shards split unevenly)."""
        self.setup()
        rank, world = self._rank_world()
        keep, readers = self._rank_sources(self.plan.validation, rank, required=False)
        shares = [self.plan.validation[i].num_examples / (readers[j][1] if readers else world)
                  for j, i in enumerate(keep)]
        return math.ceil(sum(shares))

    def _loader(self, ds) -> DataLoader:
        nw = self.cfg.num_workers
        return DataLoader(ds, batch_size=None, num_workers=nw, persistent_workers=False,
                          prefetch_factor=2 if nw > 0 else None, worker_init_fn=WorkerInit() if nw > 0 else None)

    # ---- stream position -------------------------------------------------------------------
    def record(self, item: StreamedBatch | TranslationBatch | FusedBatch) -> TranslationBatch | FusedBatch:
        """Remember the slot state that came with a consumed training batch (a fused step counts as
        one); the bare batch for the model. A batch without one (validation) passes unchanged and
        counts for nothing."""
        if not isinstance(item, StreamedBatch):
            return item
        self._slot_states[item.state.slot] = item.state.sampler
        self._slot_draws[item.state.slot] = item.state.draws
        self._num_slots = item.state.num_slots
        self._consumed += 1
        for part in batch_parts(item.batch):
            self.tally.add(part)
        if self.cfg.log_batch_ids:
            with open(self.cfg.log_batch_ids, "a") as f:
                f.write(json.dumps({"batch": self._consumed, "ids": item.batch.ids}) + "\n")
        return item.batch

    def stream_stats(self) -> dict[str, float]:
        """Sampler counts summed over this rank's slots, as of the last consumed batches: examples
        drawn, emitted in batches, and dropped (no bucket fits) per modality; early batches; examples
        rejected by a transform, per reason (``filtered/<reason>``, logged as ``data/filtered/<reason>``);
        each source's realised share of the draws (``share_<source>``); batches consumed per bucket
        (``batches_<modality>_bucket<k>``, this run's)."""
        out: dict[str, float] = {}
        for state in (s for slot in self._slot_states.values() for s in sampler_states(slot)):
            stats = state["stats"]
            for key in ("drawn", "emitted", "dropped_no_bucket"):
                for modality, n in stats[key].items():
                    out[f"{key}_{modality}"] = out.get(f"{key}_{modality}", 0.0) + n
            out["early_batches"] = out.get("early_batches", 0.0) + stats["early_batches"]
            for reason, n in stats.get("filtered", {}).items():
                out[f"filtered/{reason}"] = out.get(f"filtered/{reason}", 0.0) + n
        fused = self.cfg.fusion == "zip"
        groups = {s.name: s.modality if fused else "" for s in self.plan.train} if self.plan is not None else {}
        return {**out, **realised_shares(self._slot_draws.values(), groups), **self.tally.bucket_counts()}

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return self.record(batch) if isinstance(batch, StreamedBatch) else batch

    def state_dict(self) -> dict[str, Any]:
        local = {"consumed": self._consumed, "num_slots": self._num_slots, "slots": dict(self._slot_states)}
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, local)
            return {"ranks": gathered}
        return {"ranks": [local]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        rank, world = self._rank_world()
        ranks = state["ranks"]
        if len(ranks) != world:
            raise ValueError(f"data stream checkpoint is from {len(ranks)} rank(s); this run has {world}")
        mine = ranks[rank]
        nw = max(self.cfg.num_workers, 1)
        self._consumed = mine["consumed"]
        self._slot_states = {int(k): v for k, v in mine["slots"].items()}
        self._num_slots = mine["num_slots"]
        if mine["num_slots"] is not None:  # None: saved before the first batch, start afresh
            self._resume = {"offset": mine["consumed"] % nw, "num_slots": mine["num_slots"], "slots": self._slot_states}


@dataclass
class WorkerInit:
    """A dataloader ``worker_init_fn``: the worker dies with the training process (each holds its own
    copy of the data path, hundreds of MB; after a SIGKILL of the trainer they would otherwise live on
    under PID 1), then runs ``then`` (another ``worker_init_fn``), if any. Built in the main process:
    it records its pid, so that a worker whose parent died before it started exits at once."""

    then: Callable[[int], None] | None = None
    parent_pid: int = 0

    def __post_init__(self) -> None:
        # fork and spawn: the worker is the trainer's child. forkserver: the server's, which exits with the trainer.
        direct_child = multiprocessing.get_start_method() in ("fork", "spawn")  # the DataLoader's default
        self.parent_pid = os.getpid() if direct_child else 0

    def __call__(self, worker_id: int) -> None:
        exit_with_parent(parent_pid=self.parent_pid or None)
        if self.then is not None:
            self.then(worker_id)
