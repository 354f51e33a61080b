#!/usr/bin/env python
"""Component-aware gradient sync (``trainer.strategy: component_sync``) vs plain DDP, on CPU with gloo.

    python benchmarks/distributed.py                  # 2 and 4 processes, 20 timed steps each
    python benchmarks/distributed.py --quick          # 2 processes, 2 steps (the test runs it)

A MAMMOTH-shaped model of named components, each a stack of ``--layers`` Linear(d, d) + GELU:
``embed.full``, ``encoder.0.<src>``, ``encoder.1.<id>``, ``decoder.0.<id>``, ``decoder.1.<tgt>``.
One task per rank (source language ``l<r>``, target ``m<r>``), placed on its own rank. Two setups:

* ``language_specific``: ``encoder.0`` per source and ``decoder.1`` per target language, the
  middle stacks and the embedding shared by every task (``[SRC_LANGUAGE, FULL]``, ``[FULL, TGT_LANGUAGE]``);
* ``shared``: every component ``full`` (every task runs the same five components).

Methods, same model and the same per-rank inputs (batch ``--batch`` x d, seeded by rank):

* ``component_sync``: each rank builds only its task's components; after backward,
  ``parts.component_sync.sync_gradients`` (the used vector over the world, then one all-reduce
  per holder set), then AdamW;
* ``ddp``: every rank builds every component of the setup (``torch.nn.parallel.DistributedDataParallel``,
  what Lightning's ``DDPStrategy`` wraps, ``find_unused_parameters=True`` since a task runs only its
  components) and all-reduces every gradient.

Reported per setup, world size and method: payload bytes all-reduced per step per rank (component
sync: counted by the sync; DDP: every trainable parameter's gradient, as its buckets hold them),
median step time (forward + backward + sync + AdamW; ``torch.set_num_threads(1)`` per process),
parameters held per rank, and peak RSS per rank (``ru_maxrss``, the whole process).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import sys
import time
import zlib
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def task_components(setup: str, world: int) -> dict[str, list[str]]:
    out = {}
    for r in range(world):
        if setup == "shared":
            out[f"t{r}"] = ["embed.full", "encoder.0.full", "encoder.1.full", "decoder.0.full", "decoder.1.full"]
        else:
            out[f"t{r}"] = ["embed.full", f"encoder.0.l{r}", "encoder.1.full", "decoder.0.full", f"decoder.1.m{r}"]
    return out


def component(name: str, d: int, layers: int) -> nn.Module:
    torch.manual_seed(zlib.crc32(name.encode()))
    return nn.Sequential(*[m for _ in range(layers) for m in (nn.Linear(d, d), nn.GELU())])


class Bank(nn.Module):
    def __init__(self, names: list[str], d: int, layers: int):
        super().__init__()
        self.names = names
        self.parts = nn.ModuleList(component(n, d, layers) for n in names)

    def forward(self, x: torch.Tensor, run: list[str]) -> torch.Tensor:
        for n in run:
            x = self.parts[self.names.index(n)](x)  # (B, d) -> (B, d)
        return x


def worker(rank: int, world: int, port: int, args: argparse.Namespace, setup: str, method: str, out: str) -> None:
    from nemo_emmett.mammoth.sync import (
        broadcast_components,
        component_holders,
        new_groups,
        sync_gradients,
    )

    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=120))
    tasks = task_components(setup, world)
    mine = tasks[f"t{rank}"]
    all_names = sorted({c for cs in tasks.values() for c in cs})
    held = mine if method == "component_sync" else all_names
    bank = Bank(sorted(held), args.d, args.layers)
    holders = component_holders([[f"t{r}"] for r in range(world)], tasks)
    if method == "component_sync":
        groups = new_groups(holders)
        modules = dict(zip(bank.names, bank.parts))
        broadcast_components(modules, holders, groups, rank=rank)
        model = bank
    else:
        model = nn.parallel.DistributedDataParallel(bank, find_unused_parameters=True)
    opt = torch.optim.AdamW(bank.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(rank)
    x = torch.randn(args.batch, args.d, generator=g)
    times, sent = [], 0
    for step in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model(x, mine).pow(2).mean()
        loss.backward()
        if method == "component_sync":
            params = {n: list(m.parameters()) for n, m in zip(bank.names, bank.parts)}
            sent = sync_gradients(params, holders, groups, rank=rank).bytes
        else:
            sent = sum(p.numel() * p.element_size() for p in bank.parameters())
        opt.step()
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
    result = {"rank": rank, "bytes_per_step": sent, "step_time_s": statistics.median(times),
              "params_held": sum(p.numel() for p in bank.parameters()),
              "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    Path(out, f"{setup}-{method}-{world}-{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shared_bytes(setup: str, world: int, d: int, layers: int) -> int:
    """The gradient bytes of the components held by more than one rank (what component sync must move)."""
    tasks = task_components(setup, world)
    from nemo_emmett.mammoth.sync import component_holders

    holders = component_holders([[f"t{r}"] for r in range(world)], tasks)
    per = sum(p.numel() * 4 for p in component("x", d, layers).parameters())
    return per * sum(1 for r in holders.values() if len(r) > 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--worlds", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--out", type=str, default=None)
    args = ap.parse_args()
    if args.quick:
        args.d, args.steps, args.warmup, args.worlds = 32, 2, 1, [2]
    import tempfile

    import torch.multiprocessing as mp

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for world in args.worlds:
            for setup in ("language_specific", "shared"):
                for method in ("component_sync", "ddp"):
                    mp.start_processes(worker, args=(world, free_port(), args, setup, method, tmp), nprocs=world,
                                       start_method="spawn")
                    ranks = [json.loads(Path(tmp, f"{setup}-{method}-{world}-{r}.json").read_text())
                             for r in range(world)]
                    rows.append({"setup": setup, "world_size": world, "method": method,
                                 "bytes_per_step": max(r["bytes_per_step"] for r in ranks),
                                 "shared_component_bytes": shared_bytes(setup, world, args.d, args.layers),
                                 "step_time_ms": round(1000 * max(r["step_time_s"] for r in ranks), 2),
                                 "params_held_per_rank": max(r["params_held"] for r in ranks),
                                 "peak_rss_mib_per_rank": round(max(r["peak_rss_mib"] for r in ranks), 1)})
                    print(json.dumps(rows[-1]), file=sys.stderr)
    result = {"config": {"d": args.d, "layers": args.layers, "batch": args.batch, "steps": args.steps},
              "rows": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
