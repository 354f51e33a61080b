"""MGCM arithmetic on hand-made vectors."""

import pytest
import torch

from nemo_emmett.mgcm.projection import combine, pair_stats, project_auxiliary, subtract_projection_


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


def test_the_update_subtracts_c_times_the_primary_gradient_in_place():
    targets = [t(-1.0, 1.0), t(2.0), t(5.0)]
    ids = [id(x) for x in targets]
    subtract_projection_(targets, [t(1.0, 0.0), None, t(0.5)], torch.tensor(-2.0))  # t - c p = t + 2 p
    assert [id(x) for x in targets] == ids  # in place: no copies
    assert torch.equal(targets[0], t(1.0, 1.0)) and torch.equal(targets[1], t(2.0)) and torch.equal(targets[2], t(6.0))
    # the hooks' target already holds g_a + g_p: the same subtraction gives g_p + projected g_a
    g_p, g_a = t(1.0, 0.0), t(-1.0, 1.0)
    accumulated = [g_a + g_p]
    c = pair_stats([g_p], [g_a]).coefficient  # -1
    subtract_projection_(accumulated, [g_p], c)
    assert torch.equal(accumulated[0], g_p + project_auxiliary([g_p], [g_a])[0][0])
    # c = 0 (no conflict) leaves the values alone; a half-precision target stays half
    half = [t(3.0, -4.0).half()]
    subtract_projection_(half, [t(1.0, 1.0).half()], torch.tensor(0.0))
    assert half[0].dtype == torch.float16 and torch.equal(half[0], t(3.0, -4.0).half())
