"""Read/write policies: their exact READ/WRITE sequences on hand-made sources and targets, and bad arguments."""

import pytest

from nemo_emmett.simul.policies import (
    Action,
    FixedChunk,
    LocalAgreement,
    WaitK,
    build_policy,
    common_prefix,
    schedule,
)


def test_wait_k_writes_token_i_once_i_plus_k_units_are_read():
    # token 0 after 2 units, token 1 after 3, token 2 after 4 (the end): the rest at the end
    assert schedule(WaitK(k=2), units=4, hypotheses=5) == "RRWRWRWWW"
    assert schedule(WaitK(k=1), units=3, hypotheses=3) == "RWRWRW"
    assert schedule(WaitK(k=9), units=3, hypotheses=2) == "RRRWW"  # k past the source: read it all first
    p = WaitK(k=3, stride=4)
    assert [p.decide(r, False, 0) for r in range(4)] == [Action.READ] * 3 + [Action.WRITE]
    assert p.decide(0, True, 5) == Action.WRITE  # the source has ended: write on


def test_fixed_chunk_writes_m_tokens_after_each_chunk_of_n_units():
    assert schedule(FixedChunk(n=2, m=3), units=5, hypotheses=7) == "RRWWWRRWWWRW"
    assert schedule(FixedChunk(n=1, m=1), units=3, hypotheses=3) == schedule(WaitK(k=1), units=3, hypotheses=3)


def test_local_agreement_writes_the_common_prefix_of_the_last_two_hypotheses():
    hyps = [[5, 6], [5, 7, 8], [5, 7, 9, 10]]  # after units 1, 2 and 3 (the end)
    assert schedule(LocalAgreement(), units=3, hypotheses=hyps) == "RRWRWWW"
    p = LocalAgreement()
    p.observe([1, 2, 3], False)
    assert p.agreed == [] and p.decide(1, False, 0) == Action.READ  # one hypothesis agrees with nothing
    p.observe([1, 2, 4], False)
    assert p.agreed == [1, 2] and p.decide(2, False, 0) == Action.WRITE and p.decide(2, False, 2) == Action.READ
    p.observe([1, 3], False)  # what was agreed stays agreed (it may be written already)
    assert p.agreed == [1, 2]
    p.observe([1, 2, 4, 6], True)  # the end: the last hypothesis stands
    assert p.agreed == [1, 2, 4, 6]
    p.reset()
    assert p.agreed == [] and p.history == []


def test_la_3_needs_three_hypotheses_to_agree():
    hyps = [[1, 2], [1, 2], [1, 2, 3], [1, 2, 3]]
    assert schedule(LocalAgreement(agreement=3), units=4, hypotheses=hyps) == "RRRWWRW"
    assert common_prefix([[1, 2, 3], [1, 2], [1, 2, 4]]) == [1, 2] and common_prefix([]) == []


def test_build_policy_by_name():
    assert repr(build_policy("wait-k", k=4, stride=2)) == "WaitK(k=4, stride=2)"
    assert repr(build_policy("fixed-chunk", n=2, m=1)) == "FixedChunk(n=2, m=1, stride=4)"
    assert repr(build_policy("local-agreement")) == "LocalAgreement(agreement=2, stride=4)"
    with pytest.raises(ValueError, match=r"unknown simultaneous policy 'wait-kk'; expected one of \['fixed-chunk'"):
        build_policy("wait-kk")
    with pytest.raises(ValueError, match="policy 'wait-k': .*unexpected keyword argument 'n'"):
        build_policy("wait-k", n=2)


@pytest.mark.parametrize(("name", "kwargs", "message"), [
    ("wait-k", {"k": 0}, "k: expected a positive integer, got 0"),
    ("wait-k", {"k": -2}, "k: expected a positive integer, got -2"),
    ("wait-k", {"stride": 0}, "stride: expected a positive integer, got 0"),
    ("fixed-chunk", {"n": 0}, "n: expected a positive integer, got 0"),
    ("fixed-chunk", {"m": -1}, "m: expected a positive integer, got -1"),
    ("fixed-chunk", {"stride": 1.5}, "stride: expected a positive integer, got 1.5"),
    ("local-agreement", {"agreement": 1}, "agreement: expected at least 2 hypotheses to agree"),
    ("local-agreement", {"stride": -4}, "stride: expected a positive integer, got -4"),
])
def test_bad_arguments_name_themselves(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_policy(name, **kwargs)


def test_a_token_policy_takes_no_hypotheses():
    with pytest.raises(TypeError, match="'wait-k' decides without hypotheses"):
        WaitK().observe([1], False)
