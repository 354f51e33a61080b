"""An infinite, shuffled, resumable stream over one Shar folder, disjoint across ranks and workers.

Every epoch reshuffles the shard order and, inside each shard, the examples (a bounded shuffle
buffer). Both shuffles depend only on ``(seed, source name, epoch, shard)``, never on the slot,
so all ranks and workers agree on the epoch's order and split it without overlap:

* at least as many shards as slots: slot ``s`` reads shards ``order[s::num_slots]``;
* fewer shards than slots: every slot reads every shard and keeps items ``i % num_slots == s``
  (correct, but each slot reads all the audio: write more, smaller shards).

The position is ``(epoch, shard_pos, offset)``; resuming skips whole shards without reading them
and re-reads at most one shard up to ``offset``.
"""

from __future__ import annotations

import logging
import random
import zlib
from collections.abc import Iterator

from nemo_emmett.data.examples import Example
from nemo_emmett.data.shar import Shard, read_shard

log = logging.getLogger(__name__)


def stable_hash(text: str) -> int:
    """A process-independent hash (Python's ``hash`` of a str changes between processes)."""
    return zlib.crc32(text.encode())


def buffer_shuffle(items: Iterator[Example], buffer_size: int, rng: random.Random) -> Iterator[Example]:
    """Shuffle with a bounded buffer: fill, then emit a random element per incoming one."""
    buf: list[Example] = []
    for item in items:
        if len(buf) < buffer_size:
            buf.append(item)
            continue
        i = rng.randrange(buffer_size)
        buf[i], item = item, buf[i]
        yield item
    rng.shuffle(buf)
    yield from buf


class ShardedStream:
    """Endless examples of one source for one (rank, worker) slot."""

    def __init__(
        self,
        name: str,
        shards: list[Shard],
        *,
        seed: int,
        slot: int = 0,
        num_slots: int = 1,
        shuffle: bool = True,
        shuffle_buffer: int = 1000,
        infinite: bool = True,
    ):
        if not shards:
            raise ValueError(f"source {name!r} has no shards")
        if not 0 <= slot < num_slots:
            raise ValueError(f"slot {slot} is outside [0, {num_slots})")
        self.name = name
        self.shards = shards
        self.seed = seed
        self.slot = slot
        self.num_slots = num_slots
        self.shuffle = shuffle
        self.shuffle_buffer = shuffle_buffer
        self.infinite = infinite
        self.by_shard = len(shards) >= num_slots
        if not self.by_shard:
            # Finite (validation) passes stride cheaply; for training say it once, from slot 0.
            report = log.warning if infinite and slot == 0 else log.debug
            report(
                "source %r: %d shard(s) for %d rank x worker slots; every slot reads all of it and keeps "
                "its share. Write at least %d shards to read each only once.",
                name, len(shards), num_slots, num_slots,
            )
        self.epoch = 0
        self.shard_pos = 0  # index into this slot's shard plan of the epoch
        self.offset = 0  # items read (before slot filtering) from the current shard
        self.epoch_index = 0  # items read (before slot filtering) in this epoch before the current shard
        self._it: Iterator[Example] | None = None

    def _rng(self, *parts: int) -> random.Random:
        return random.Random(hash((self.seed, stable_hash(self.name), *parts)))

    def _plan(self, epoch: int) -> list[int]:
        order = list(range(len(self.shards)))
        if self.shuffle:
            self._rng(epoch).shuffle(order)
        return order[self.slot :: self.num_slots] if self.by_shard else order

    def _shard_items(self, epoch: int, shard_idx: int) -> Iterator[Example]:
        items = read_shard(self.shards[shard_idx], source=self.name)
        if self.shuffle:
            items = buffer_shuffle(items, self.shuffle_buffer, self._rng(epoch, shard_idx, 1))
        return items

    def _generate(self) -> Iterator[Example]:
        while True:
            plan = self._plan(self.epoch)
            from_start = self.shard_pos == 0 and self.offset == 0
            yielded_in_epoch = False
            while self.shard_pos < len(plan):
                skip = self.offset
                for k, item in enumerate(self._shard_items(self.epoch, plan[self.shard_pos])):
                    if k < skip:
                        continue
                    raw_index = self.epoch_index + k
                    self.offset = k + 1
                    if self.by_shard or raw_index % self.num_slots == self.slot:
                        yielded_in_epoch = True
                        yield item
                self.epoch_index += self.offset
                self.shard_pos += 1
                self.offset = 0
            if self.infinite and from_start and not yielded_in_epoch:
                raise RuntimeError(
                    f"source {self.name!r} gave no example to slot {self.slot} of {self.num_slots} in epoch "
                    f"{self.epoch}: it has fewer examples than ranks x workers, or its shards are empty"
                )
            self.epoch += 1
            self.shard_pos = self.offset = self.epoch_index = 0
            if not self.infinite:
                return

    def __iter__(self) -> Iterator[Example]:
        return self

    def __next__(self) -> Example:
        if self._it is None:
            self._it = self._generate()
        return next(self._it)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "shard_pos": self.shard_pos, "offset": self.offset, "epoch_index": self.epoch_index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        check_state_keys(f"stream {self.name!r}", state, self.state_dict())
        self.epoch, self.shard_pos = state["epoch"], state["shard_pos"]
        self.offset, self.epoch_index = state["offset"], state["epoch_index"]
        self._it = None


def check_state_keys(what: str, state: dict, expected: dict) -> None:
    """``load_state_dict`` of every stateful data object rejects missing and unexpected keys."""
    if set(state) != set(expected):
        raise KeyError(f"{what}: state has keys {sorted(state)}, expected {sorted(expected)}")
