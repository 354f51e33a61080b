"""The gradient syncs a manually optimised step uses: chosen from the strategy, local, DDP's all-reduce."""

from types import SimpleNamespace

import torch

from nemo_emmett.parts.gradient_sync import (
    DDPGradientSync,
    LocalGradientSync,
    all_reduce_gradients,
    gradient_sync_for,
)


def params_with_grads(*grads):
    out = []
    for g in grads:
        p = torch.nn.Parameter(torch.zeros_like(g))
        p.grad = g.clone()
        out.append(p)
    return out


def test_local_sync_leaves_gradients_and_clips_by_the_local_norm():
    params = params_with_grads(torch.tensor([3.0]), torch.tensor([[4.0]]))
    params.append(torch.nn.Parameter(torch.ones(2)))  # no gradient: counts as zero
    sync = gradient_sync_for(SimpleNamespace(model=torch.nn.Linear(1, 1)))  # one process, no DDP wrapper
    assert isinstance(sync, LocalGradientSync) and not sync.sync_each_task
    with sync.no_sync():
        sync.sync(params)
    assert float(params[0].grad) == 3.0 and params[2].grad is None
    assert float(sync.global_norm(params)) == 5.0 and float(sync.global_norm([])) == 0.0
    assert float(sync.clip_by_norm(params, 1.0)) == 5.0
    torch.testing.assert_close(torch.cat([params[0].grad, params[1].grad.view(-1)]), torch.tensor([0.6, 0.8]))


def test_a_strategy_with_its_own_sync_provides_it():
    class Own:
        sync_each_task = True

    own = Own()
    assert gradient_sync_for(SimpleNamespace(gradient_sync=lambda: own)) is own


def test_a_ddp_wrapper_gets_ddp_sync_whose_no_sync_is_the_wrapper_s(tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        wrapper = DistributedDataParallel(torch.nn.Linear(2, 2))
        sync = gradient_sync_for(SimpleNamespace(model=wrapper))
        assert isinstance(sync, DDPGradientSync) and sync.wrapper is wrapper
        with sync.no_sync():
            assert not wrapper.require_backward_grad_sync  # the per-pass all-reduce is off
        assert wrapper.require_backward_grad_sync
    finally:
        dist.destroy_process_group()


def _reduce_worker(rank, world, port, out_dir):
    import json

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        params = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2, 2)),
                  torch.nn.Parameter(torch.zeros(5)), torch.nn.Parameter(torch.zeros(2))]
        params[0].grad = torch.full((3,), float(rank + 1))
        if rank == 0:  # only rank 0 used the second parameter (a text-only path, say)
            params[1].grad = torch.ones(2, 2)
        params[2].grad = torch.arange(5.0) * (rank + 1)
        all_reduce_gradients(params, bucket_bytes=16)  # several buckets
        # the fourth parameter: no rank used it (a text step everywhere: the speech encoder)
        (out_dir / f"{rank}.json").write_text(json.dumps([None if p.grad is None else p.grad.tolist() for p in params]))
    finally:
        dist.destroy_process_group()


def test_all_reduce_averages_with_missing_gradients_as_zeros_and_keeps_unused_ones_none(tmp_path):
    import json
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_reduce_worker, args=(2, port, tmp_path), nprocs=2, join=True)
    expected = [[1.5] * 3, [[0.5, 0.5], [0.5, 0.5]], [0.0, 1.5, 3.0, 4.5, 6.0], None]
    assert [json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1)] == [expected, expected]
