"""Component sync across 2 gloo processes started by the test."""

from __future__ import annotations

import torch

from tests.strategies.workers import HELD, local_loss, make_component, run_workers, sync_step_worker


def reference_step() -> dict[str, dict[str, torch.Tensor]]:
    """One process: every rank's gradient computed apart, averaged over the ranks that used each
    component, then the same SGD step."""
    names = sorted({n for held in HELD.values() for n in held})
    start = {n: make_component(n) for n in names}  # rank 0's initial values (the lowest holder's)
    grads: dict[str, list[list[torch.Tensor]]] = {}
    for rank, held in HELD.items():
        modules = {n: make_component(n) for n in held}
        local_loss(rank, modules).backward()
        for n, m in modules.items():
            if all(p.grad is not None for p in m.parameters()):
                grads.setdefault(n, []).append([p.grad for p in m.parameters()])
    out = {}
    for n, m in start.items():
        with torch.no_grad():
            for i, p in enumerate(m.parameters()):
                if n in grads:
                    p.sub_(0.1 * torch.stack([g[i] for g in grads[n]]).mean(0))
        out[n] = m.state_dict()
    return out


def test_sync_step_matches_single_process_reference(tmp_path):
    run_workers(sync_step_worker, 2, str(tmp_path / "init"), str(tmp_path), timeout_s=60)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    expected = reference_step()
    for rank, res in enumerate(results):
        for name, state in res["state"].items():
            for key, value in state.items():
                torch.testing.assert_close(value, expected[name][key], msg=f"rank {rank} {name}.{key}")
    for name in ("shared", "shared_sometimes", "shared_idle"):  # replicas bit-identical
        for key in results[0]["state"][name]:
            assert torch.equal(results[0]["state"][name][key], results[1]["state"][name][key]), (name, key)
    # unshared components take only their own rank's gradient; rank 1's own.0 never exists
    assert "own.0" not in results[1]["state"] and "own.1" not in results[0]["state"]
    assert results[0]["used"] == {"own.0": 1, "own.1": 1, "shared": 2, "shared_idle": 0, "shared_sometimes": 1}
    # a holder that did not use a component receives the average; a component nobody used keeps None
    assert results[1]["grads_none"]["shared_sometimes"] is False
    assert results[0]["grads_none"]["shared_idle"] and results[1]["grads_none"]["shared_idle"]
    # bytes: the used vector (5 fp32) + the two used shared Linear(3, 3) (12 fp32 each); not the idle one
    assert results[0]["bytes"] == results[1]["bytes"] == 5 * 4 + 2 * 12 * 4
