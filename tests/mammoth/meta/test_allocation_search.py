"""Allocation over nodes x gpus_per_node: the cost model's exact numbers, the search's guarantees, the meta-config."""

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

from nemo_emmett.cli import config as config_config
from nemo_emmett.mammoth.meta.allocation import allocate, allocate_devices
from nemo_emmett.mammoth.meta.allocation_cost import (
    LinkWeights,
    Topology,
    communication_cost,
    component_bytes,
    ddp_bytes_per_rank,
    device_loads,
    phases,
    ring_bytes,
    stack_params,
    sync_bytes_per_rank,
    task_starts,
)
from nemo_emmett.mammoth.meta.allocation_search import (
    AllocationState,
    Problem,
    better,
    capacity,
    objective,
    random_allocation,
)
from nemo_emmett.mammoth.meta.schema import AllocationSpec
from nemo_emmett.mammoth.tasks import ModularTaskConfig
from nemo_emmett.modules.transformer import LayerStack
from tests.mammoth.meta.test_config_tool import write_meta


def _benchmark():
    """``benchmarks/allocation.py`` (not a package): its setups are the inputs checked here, made small."""
    spec = importlib.util.spec_from_file_location("allocation_benchmark",
                                                  Path(__file__).resolve().parents[3] / "benchmarks" / "allocation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_BENCH = _benchmark()
multi30k, synthetic = _BENCH.multi30k, _BENCH.synthetic


def task(name, *components):
    return ModularTaskConfig(name=name, source_lang="xx", target_lang="yy", encoder=list(components), decoder=[],
                             source_embed="embed.full", target_embed="embed.full")


def search(setup, **kw):
    spec = AllocationSpec(steps=setup["steps"], **kw)
    return allocate(setup["tasks"], setup["weights"], setup["topology"], sizes=setup["sizes"],
                    curriculum=setup["curriculum"], spec=spec)


def problem(setup, **kw):
    starts = task_starts(setup["weights"], setup["curriculum"])
    return Problem(topology=setup["topology"], components={t.name: t.components() for t in setup["tasks"]},
                   sizes=setup["sizes"], weights=setup["weights"], starts=starts, horizon=setup["steps"] or 1, **kw)


# ---- the cost model, on hand-made inputs --------------------------------------------------------
def test_ring_bytes_split_links_inside_and_across_nodes():
    t = Topology(2, 2)  # ranks 0, 1 on node 0; 2, 3 on node 1
    assert ring_bytes(100, [0], t) == (0.0, 0.0)
    assert ring_bytes(100, [0, 1], t) == (200.0, 0.0)  # 2 links x 2 (k-1)/k x 100
    assert ring_bytes(100, [0, 2], t) == (0.0, 200.0)
    assert ring_bytes(100, [0, 1, 2, 3], t) == (300.0, 300.0)  # 4 links of 150, two cross
    assert ring_bytes(90, [0, 1, 2], t) == (120.0, 240.0)  # 3 links of 120, two cross


def test_communication_cost_counts_delayed_tasks_from_their_start():
    t = Topology(2, 1)
    tasks = {"a": ["x", "y"], "b": ["x"]}
    sizes = {"x": 100, "y": 50}
    cost = communication_cost([["a"], ["b"]], tasks, sizes, {"a": 0, "b": 0}, 100, t)
    assert (cost.intra_bytes, cost.inter_bytes, cost.weighted) == (0.0, 200.0, 1600.0)  # y: one holder, free
    late = communication_cost([["a"], ["b"]], tasks, sizes, {"a": 0, "b": 50}, 100, t, LinkWeights(1.0, 3.0))
    assert (late.intra_bytes, late.inter_bytes, late.weighted) == (0.0, 100.0, 300.0)  # x shared half the time
    never = communication_cost([["a"], ["b"]], tasks, sizes, {"a": 0, "b": None}, 100, t)
    assert never.weighted == 0.0  # weight 0: never trained, never synced
    together = communication_cost([["a", "b"], ["a"]], tasks, sizes, {"a": 0, "b": 0}, 100, Topology(1, 2))
    assert (together.intra_bytes, together.inter_bytes) == (300.0, 0.0)


def test_loads_and_phases_are_exact_and_delayed_tasks_weigh_less():
    assert phases([0, 0, 50], 200) == [(0, 0.25), (50, 0.75)]
    assert device_loads([["a"], ["b"]], {"a": 3, "b": 1}, {"a": 0, "b": 0}, 1) == [0.75, 0.25]
    # b joins at 50 of 100: the first half is all a's
    assert device_loads([["a"], ["b"]], {"a": 3, "b": 1}, {"a": 0, "b": 50}, 100) == [0.875, 0.125]
    assert device_loads([["a", "b"], ["a"]], {"a": 2, "b": 2}, {"a": 0, "b": 0}, 1) == [0.75, 0.25]  # a split


def test_bytes_per_rank_against_ddp():
    per_rank = sync_bytes_per_rank([["a"], ["a", "b"], ["b"]], {"a": ["x", "y"], "b": ["x"]}, {"x": 30, "y": 6})
    assert per_rank == [2 * 2 / 3 * 30 + 6, 2 * 2 / 3 * 30 + 6, 2 * 2 / 3 * 30]  # x on 3 ranks, y on 2
    assert ddp_bytes_per_rank(36, 3) == 48.0


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_stack_sizes_match_the_modules(kind):
    module = LayerStack(kind, num_layers=2, d_model=24, n_heads=2, d_ff=40, dropout=0.0)
    assert stack_params(kind, 2, 24, 40) == sum(p.numel() for p in module.parameters())
    sizes = component_bytes([f"{kind}.1.en", "embed.full", "perception.full"], encoder_layers=[1, 2],
                            decoder_layers=[1, 2], d_model=24, d_ff=40, vocab_size=10, perception_params=7)
    assert sizes == {f"{kind}.1.en": 4 * stack_params(kind, 2, 24, 40), "embed.full": 4 * 240, "perception.full": 28}


@pytest.mark.parametrize("bad, message", [
    (lambda: Topology(0, 4), "nodes must be an integer >= 1, got 0"),
    (lambda: Topology(2, 0), "gpus_per_node must be an integer >= 1, got 0"),
    (lambda: phases([0, 50], 50), "allocation.steps must be an integer above the latest curriculum start"),
    (lambda: phases([10], 50), "at least one trained task must start at step 0"),
])
def test_cost_model_errors_name_the_key(bad, message):
    with pytest.raises(ValueError, match=message):
        bad()


# ---- the search -------------------------------------------------------------------------------
SETUPS = {"multi30k_2x4": multi30k, "synthetic_16_8x8": lambda: synthetic(16),
          "synthetic_12_2x4": lambda: synthetic(12, nodes=2, gpus_per_node=4)}


@pytest.mark.parametrize("name", SETUPS)
def test_search_is_never_worse_than_greedy_and_its_cost_is_the_cost_model(name):
    setup = SETUPS[name]()
    result = search(setup, iterations=3000)
    p = problem(setup)
    cap = capacity(p, result.greedy)
    assert not better(objective(p, result.greedy, cap), objective(p, result.devices, cap))
    assert objective(p, result.devices, cap)[3] == pytest.approx(result.cost.weighted, rel=1e-9)
    assert sorted({n for d in result.devices for n in d}) == sorted(t.name for t in setup["tasks"])
    assert all(result.devices) and all(len(set(d)) == len(d) for d in result.devices)
    assert max(result.loads) <= cap + 1e-12  # as balanced as greedy (no tolerance given)
    if name == "multi30k_2x4":  # node-blind greedy spreads languages over both nodes; the search does not
        assert result.cost.weighted < 0.9 * result.greedy_cost.weighted
        assert result.cost.inter_bytes < result.greedy_cost.inter_bytes


def test_incremental_costs_match_the_pure_function_after_moves():
    setup = synthetic(12, nodes=2, gpus_per_node=4)
    p = problem(setup)
    devices = random_allocation(8, [t.name for t in setup["tasks"]], seed=3)
    s = AllocationState(p, devices)
    s.move(0, (s.dev[0] + 3) % 8)
    s.swap_ranks(1, 6)
    pure = communication_cost(s.devices(), p.components, p.sizes, p.starts, p.horizon, p.topology)
    assert s.comm == pytest.approx(pure.weighted, rel=1e-12)
    assert s.load == pytest.approx(device_loads(s.devices(), p.weights, p.starts, p.horizon), rel=1e-12)


def test_search_is_deterministic_for_a_seed():
    setup = synthetic(12, nodes=2, gpus_per_node=4)
    assert search(setup, seed=5, iterations=2000).devices == search(setup, seed=5, iterations=2000).devices
    assert search(setup, iterations=0).devices == search(setup, iterations=0).greedy


def test_a_tolerance_makes_the_search_balance_beyond_greedy():
    tasks = [task(n, "encoder.0.full") for n in "abcde"]
    weights = {"a": 3, "b": 3, "c": 2, "d": 2, "e": 2}
    # greedy: a, b first; c, d one each; e fits nowhere within 1.1 x 6 and goes to the lower index
    assert allocate_devices(tasks, weights, 2) == [["a", "c", "e"], ["b", "d"]]
    sizes = {"encoder.0.full": 10, "embed.full": 10}
    loose = allocate(tasks, weights, Topology(1, 2), sizes=sizes, spec=AllocationSpec(iterations=200))
    assert max(loose.loads) == pytest.approx(7 / 12)
    exact = allocate(tasks, weights, Topology(1, 2), sizes=sizes, spec=AllocationSpec(iterations=200,
                                                                                         balance_tolerance=0.0))
    assert exact.loads == pytest.approx([0.5, 0.5])


def test_delayed_tasks_do_not_leave_a_rank_idle_at_step_0():
    setup = synthetic(100)
    result = search(setup, iterations=5000)
    starts = task_starts(setup["weights"], setup["curriculum"])

    def idle(devices):
        return sum(all(starts[n] != 0 for n in d) for d in devices)

    assert idle(result.greedy) > 0 and idle(result.devices) == 0  # greedy ignores the curriculum


def test_balance_within_tolerance_and_an_impossible_one_is_an_error():
    setup = multi30k()  # 12 equal tasks on 8 ranks: some rank has 2, i.e. 4/3 of the mean
    result = search(setup, balance_tolerance=0.4, iterations=2000)
    assert max(result.loads) * 8 <= 1.4 + 1e-12
    with pytest.raises(ValueError, match=r"allocation.balance_tolerance=0.2: no allocation found .* "
                                         r"balance_tolerance >= 0.333"):
        search(setup, balance_tolerance=0.2, iterations=500)


@pytest.mark.parametrize("kw, message", [
    ({"tasks_per_device": 1}, r"allocation.tasks_per_device=1: 12 tasks do not fit on 2 x 4 devices \(at most 8\)"),
    ({"inter_node": -1.0}, "allocation.inter_node must be a finite number >= 0, got -1.0"),
    ({"iterations": -5}, "allocation.iterations must be an integer >= 0, got -5"),
    ({"balance_tolerance": -0.1}, "allocation.balance_tolerance must be a finite number >= 0, got -0.1"),
])
def test_bad_allocation_settings_name_key_and_value(kw, message):
    with pytest.raises(ValueError, match=message):
        search(multi30k(), **kw)


def test_tasks_per_device_is_kept():
    setup = synthetic(24, nodes=2, gpus_per_node=4)  # 46 tasks on 8 ranks: greedy puts 7 on one
    result = search(setup, tasks_per_device=6, iterations=3000)
    assert max(len(d) for d in result.greedy) > 6 >= max(len(d) for d in result.devices)


# ---- the meta-config tool ---------------------------------------------------------------------
def test_meta_config_with_nodes_and_gpus_per_node_writes_an_allocation(tmp_path):
    meta = write_meta(tmp_path, nodes=2, gpus_per_node=2, allocation={"seed": 3, "iterations": 100})
    out = tmp_path / "toy.yaml"
    assert config_config.main([str(meta), "--out", str(out)]) == 0
    devices = yaml.safe_load(out.read_text())["model"]["modular"]["devices"]
    assert len(devices) == 4 and all(devices)  # 2 tasks on 4 ranks: copies
    assert {n for d in devices for n in d} == {"mt_en-de", "mt_de-en"}


def test_meta_config_devices_is_one_node(tmp_path):
    outs = []
    for i, keys in enumerate(({"devices": 3}, {"nodes": 1, "gpus_per_node": 3}, {"gpus_per_node": 3})):
        folder = tmp_path / str(i)
        folder.mkdir()
        assert config_config.main([str(write_meta(folder, **keys)), "--out", str(folder / "toy.yaml")]) == 0
        outs.append(yaml.safe_load((folder / "toy.yaml").read_text())["model"]["modular"]["devices"])
    assert outs[0] == outs[1] == outs[2] and len(outs[0]) == 3


@pytest.mark.parametrize("keys, message", [
    ({"nodes": 0, "gpus_per_node": 2}, "nodes must be an integer >= 1, got 0"),
    ({"nodes": 2, "gpus_per_node": 0}, "gpus_per_node must be an integer >= 1, got 0"),
    ({"nodes": 2}, "nodes=2 needs gpus_per_node"),
    ({"devices": 2, "nodes": 2, "gpus_per_node": 2}, "give devices=2 .one node. or nodes with gpus_per_node"),
    ({"nodes": 1, "gpus_per_node": 2, "allocation": {"tasks_per_device": 0}},
     "allocation.tasks_per_device must be an integer >= 1, got 0"),
    ({"nodes": 1, "gpus_per_node": 2, "allocation": {"sead": 1}}, "allocation: unknown key 'sead'"),
])
def test_bad_meta_config_allocation_errors_name_key_and_value(tmp_path, capsys, keys, message):
    meta = write_meta(tmp_path, **keys)
    assert config_config.main([str(meta), "--out", str(tmp_path / "toy.yaml")]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err


@pytest.mark.parametrize("args", [(32,), (32, 4, 4)])
def test_search_groups_a_language_family_by_node(args):
    # Greedy keeps each rank's tasks on one side of English but is node-blind: every node holds some
    # en->x and some x->en ranks. Grouping them by node needs rank swaps and the per-node tie-break,
    # since the ring cost only drops when a node holds none of a component.
    setup = {**synthetic(*args), "curriculum": {}, "steps": None}
    result = search(setup, iterations=3000)
    assert result.cost.inter_bytes < 0.9 * result.greedy_cost.inter_bytes
