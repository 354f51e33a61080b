"""MGCM arithmetic on hand-made vectors, and module grouping per granularity."""

import pytest
import torch

from nemo_emmett.mgcm.projection import (
    DEFAULT_MODULE_TYPES,
    combine,
    group_parameters,
    module_type,
    pair_stats,
    project_auxiliary,
)
from nemo_emmett.mgcm.step import summarize


def t(*xs):
    return torch.tensor(xs, dtype=torch.float32)


def test_conflicting_part_is_removed_exactly():
    primary = [t(1.0, 0.0), t(0.0)]
    aux = [t(-1.0, 1.0), t(2.0)]  # dot = -1, |g_p|^2 = 1: c = -1
    out, stats = project_auxiliary(primary, aux)
    assert torch.equal(out[0], t(0.0, 1.0)) and torch.equal(out[1], t(2.0))
    assert float(stats.dot) == -1.0 and float(stats.primary_sq) == 1.0 and float(stats.aux_sq) == 6.0
    assert float(stats.coefficient) == -1.0 and float(stats.removed_sq) == 1.0
    # the projected auxiliary gradient is orthogonal to the primary one
    assert float(pair_stats(primary, out).dot) == 0.0
    # inputs are not modified
    assert torch.equal(aux[0], t(-1.0, 1.0)) and torch.equal(primary[0], t(1.0, 0.0))


def test_scaled_conflict():
    out, stats = project_auxiliary([t(2.0, 0.0)], [t(-3.0, 4.0)])  # c = -6 / 4
    assert torch.equal(out[0], t(0.0, 4.0))
    assert float(stats.cos) == pytest.approx(-0.6)


@pytest.mark.parametrize("aux", [t(1.0, 1.0), t(0.0, 5.0)])  # positive and zero cosine
def test_non_conflicting_auxiliary_is_untouched(aux):
    out, stats = project_auxiliary([t(1.0, 0.0)], [aux])
    assert torch.equal(out[0], aux) and float(stats.coefficient) == 0.0 and float(stats.removed_sq) == 0.0


def test_zero_or_missing_primary_leaves_auxiliary_unchanged():
    aux = [t(-1.0, 1.0)]
    for primary in ([t(0.0, 0.0)], [None]):
        out, stats = project_auxiliary(primary, aux)
        assert torch.equal(out[0], aux[0]) and float(stats.cos) == 0.0


def test_missing_tensors_inside_a_module():
    # the second tensor has no auxiliary gradient: the projection gives it -c g_p
    out, _ = project_auxiliary([t(1.0), t(1.0)], [t(-4.0), None])  # dot -4, |g_p|^2 2: c = -2
    assert torch.equal(out[0], t(-2.0)) and torch.equal(out[1], t(2.0))
    # no primary gradient on a tensor: it contributes nothing and is left as it is
    out, _ = project_auxiliary([t(1.0), None], [t(-1.0), t(3.0)])
    assert torch.equal(out[0], t(0.0)) and torch.equal(out[1], t(3.0))


def test_dots_and_norms_in_fp32():
    big = torch.full((4,), 300.0, dtype=torch.float16)  # 300^2 * 4 overflows fp16
    stats = pair_stats([big], [-big])
    assert stats.dot.dtype == torch.float32 and float(stats.dot) == -360000.0
    out, _ = project_auxiliary([big], [-big])
    assert out[0].dtype == torch.float16 and torch.equal(out[0], torch.zeros(4, dtype=torch.float16))


def test_combine_keeps_primary_and_projects_each_task_per_module():
    primary = {"a": [t(1.0, 0.0)], "b": [t(0.0, 1.0)]}
    aux = {
        "asr": {"a": [t(-1.0, 1.0)], "b": [t(1.0, 1.0)]},  # conflicts in a only
        "mt": {"a": [t(-2.0, 0.0)], "c": [t(7.0)]},  # conflicts in a; c has no primary gradient
    }
    out = combine(primary, aux)
    assert torch.equal(out["a"][0], t(1.0, 1.0))  # g_p + (0, 1) + (0, 0)
    assert torch.equal(out["b"][0], t(1.0, 2.0))  # plain sum
    assert torch.equal(out["c"][0], t(7.0))  # auxiliary unchanged
    assert torch.equal(primary["a"][0], t(1.0, 0.0))  # the primary gradient is never changed
    # module-level vs model-level: the same vectors projected as one flattened module differ
    flat = combine({"all": [torch.cat([primary["a"][0], primary["b"][0]])]},
                   {"asr": {"all": [torch.cat([aux["asr"]["a"][0], aux["asr"]["b"][0]])]}})
    assert torch.equal(flat["all"][0], t(0.0, 1.0, 1.0, 2.0))  # dot = 0: nothing projected


NAMES = ["perception.encoder.layers.0.linear.weight", "perception.encoder.layers.0.linear.bias",
         "perception.encoder.layers.0.norm.weight", "backbone.shared.weight",
         "backbone.encoder.block.0.layer.0.SelfAttention.q.weight",
         "backbone.encoder.block.0.layer.0.SelfAttention.k.weight",
         "backbone.encoder.block.0.layer.0.layer_norm.weight",
         "backbone.decoder.block.0.layer.1.EncDecAttention.q.weight", "scale"]


def test_tensor_granularity():
    assert group_parameters(NAMES, granularity="tensor") == {n: [n] for n in NAMES}


def test_module_granularity_groups_by_owner_or_pattern():
    groups = group_parameters(NAMES, granularity="module")
    assert groups == {
        "perception.encoder.layers.0.linear": NAMES[0:2],
        "perception.encoder.layers.0.norm": [NAMES[2]],
        "backbone.shared": [NAMES[3]],
        "backbone.encoder.block.0.layer.0.SelfAttention.q": [NAMES[4]],
        "backbone.encoder.block.0.layer.0.SelfAttention.k": [NAMES[5]],
        "backbone.encoder.block.0.layer.0.layer_norm": [NAMES[6]],
        "backbone.decoder.block.0.layer.1.EncDecAttention.q": [NAMES[7]],
        "scale": ["scale"],
    }
    sublayer = r"(backbone\.(?:en|de)coder\.block\.\d+\.layer\.\d+)\..*"
    groups = group_parameters(NAMES, granularity="module", module_patterns=[sublayer])
    assert groups["backbone.encoder.block.0.layer.0"] == NAMES[4:7]
    assert groups["backbone.decoder.block.0.layer.1"] == [NAMES[7]]
    assert groups["perception.encoder.layers.0.linear"] == NAMES[0:2]  # no pattern: owner
    assert sum(len(v) for v in groups.values()) == len(NAMES)


def test_component_granularity():
    comps = {"speech": r"perception\..*", "text_encoder": r"backbone\.(shared|encoder)\..*", "rest": ".*"}
    groups = group_parameters(NAMES, granularity="component", components=comps)
    assert groups == {"speech": NAMES[0:3], "text_encoder": NAMES[3:7], "rest": NAMES[7:]}
    with pytest.raises(ValueError, match=r"2 parameter\(s\) match no component.*EncDecAttention"):
        group_parameters(NAMES, granularity="component", components={k: v for k, v in comps.items() if k != "rest"})
    with pytest.raises(ValueError, match="mgcm.components"):
        group_parameters(NAMES, granularity="component")


def test_bad_granularity_and_patterns_are_named():
    with pytest.raises(ValueError, match="mgcm.granularity .* 'layer'"):
        group_parameters(NAMES, granularity="layer")
    with pytest.raises(ValueError, match=r"mgcm.module_patterns: .* needs a capture group"):
        group_parameters(NAMES, granularity="module", module_patterns=[r"backbone\..*"])
    with pytest.raises(ValueError, match="mgcm.components.x: .* not a valid regex"):
        group_parameters(NAMES, granularity="component", components={"x": "("})


def test_module_types():
    types = [module_type(n, DEFAULT_MODULE_TYPES) for n in NAMES]
    assert types == ["perception"] * 3 + ["embeddings"] + ["encoder"] * 3 + ["decoder", "other"]


def test_summary_statistics():
    # counted, conflicts, cos_sum, removed_sq, aux_sq
    assert summarize([4, 1, 0.8, 1.0, 16.0]) == {"conflict_share": 0.25, "mean_cos": 0.2, "norm_removed": 0.25}
    assert summarize([0, 0, 0, 0, 0]) == {"conflict_share": None, "mean_cos": None, "norm_removed": None}


def _reduce_worker(rank, world, port, out_dir):
    import json

    import torch.distributed as dist

    from nemo_emmett.mgcm.step import all_reduce_gradients

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        params = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2, 2)),
                  torch.nn.Parameter(torch.zeros(5))]
        params[0].grad = torch.full((3,), float(rank + 1))
        if rank == 0:  # only rank 0 used the second parameter (a text-only path, say)
            params[1].grad = torch.ones(2, 2)
        params[2].grad = torch.arange(5.0) * (rank + 1)
        all_reduce_gradients(params, bucket_bytes=16)  # several buckets
        (out_dir / f"{rank}.json").write_text(json.dumps([p.grad.tolist() for p in params]))
    finally:
        dist.destroy_process_group()


def test_all_reduce_averages_with_missing_gradients_as_zeros(tmp_path):
    import json
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_reduce_worker, args=(2, port, tmp_path), nprocs=2, join=True)
    expected = [[1.5] * 3, [[0.5, 0.5], [0.5, 0.5]], [0.0, 1.5, 3.0, 4.5, 6.0]]
    assert [json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1)] == [expected, expected]
