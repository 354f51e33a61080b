"""Greedy and beam search over a step function, on hand-made distributions; one EOS id or several."""

import math

import pytest
import torch

from nemo_emmett.parts.decoding import beam_search, decode, greedy_search, strip_eos

EOS, A, B, C = 0, 1, 2, 3  # C: a second EOS id where a test says so (eos_id=[EOS, C])


def table_step(*tables):
    """A toy 'model': the next-token distribution depends on the prefix; example ``i`` follows
    ``tables[i]`` (default: the first). The state is one (example, prefix) per row."""
    def log_probs(state):
        rows = []
        for i, prefix in state:
            probs = tables[i].get(tuple(prefix), {EOS: 1.0})
            rows.append([math.log(probs.get(v, 1e-9)) for v in range(4)])
        return torch.tensor(rows)  # (N, 4)

    def step(tokens, state):
        state = [(i, [*p, int(t)]) for (i, p), t in zip(state, tokens)]
        return log_probs(state), state

    def reorder(state, index):
        return [(state[k][0], list(state[k][1])) for k in index.tolist()]

    return log_probs, step, reorder


# Greedy takes A (0.6) and then has only poor continuations; B then EOS is the better sequence.
TABLE = {(): {A: 0.6, B: 0.4}, (A,): {A: 0.34, B: 0.33, EOS: 0.33}, (A, A): {EOS: 1.0}, (B,): {EOS: 0.99}}


def test_beam_search_finds_the_better_sequence_greedy_misses():
    log_probs, step, reorder = table_step(TABLE)
    start = [(0, [])]
    assert greedy_search(step, log_probs(start), start, eos_id=EOS, max_new_tokens=5) == [[A, A]]
    assert beam_search(step, reorder, log_probs(start), start, beam_size=2, eos_id=EOS, max_new_tokens=5,
                       length_penalty=0.0) == [[B]]


def test_beam_of_one_is_greedy_and_rows_are_independent():
    other = {(): {B: 0.9, A: 0.1}, (B,): {B: 0.8, EOS: 0.2}, (B, B): {EOS: 1.0}}
    log_probs, step, reorder = table_step(TABLE, other)
    start = [(0, []), (1, [])]
    greedy = greedy_search(step, log_probs(start), start, eos_id=EOS, max_new_tokens=5)
    assert greedy == [[A, A], [B, B]]
    assert beam_search(step, reorder, log_probs(start), start, beam_size=1, eos_id=EOS, max_new_tokens=5) == greedy
    assert beam_search(step, reorder, log_probs(start), start, beam_size=2, eos_id=EOS, max_new_tokens=5,
                       length_penalty=0.0) == [[B], [B, B]]


def test_max_new_tokens_cuts_and_eos_is_stripped():
    forever = {(): {A: 1.0}, (A,): {A: 1.0}, (A, A): {A: 1.0}, (A, A, A): {A: 1.0}}
    log_probs, step, reorder = table_step(forever)
    start = [(0, [])]
    assert greedy_search(step, log_probs(start), start, eos_id=EOS, max_new_tokens=3) == [[A, A, A]]
    assert decode(step, reorder, log_probs(start), start, beam_size=2, eos_id=EOS, max_new_tokens=3) == [[A, A, A]]
    assert strip_eos([[1, 2, 0, 5], [3], [0]], 0) == [[1, 2], [3], []]
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(step, reorder, log_probs(start), start, beam_size=0, eos_id=EOS, max_new_tokens=3)


def test_length_penalty_prefers_longer_hypotheses():
    # "A A EOS" (0.5 * 0.9 * 1) vs "EOS" (0.5): raw scores prefer EOS alone, per-token scores the longer one
    table = {(): {A: 0.5, EOS: 0.5}, (A,): {A: 0.9, EOS: 0.1}, (A, A): {EOS: 1.0}}
    log_probs, step, reorder = table_step(table)
    start = [(0, [])]
    kw = {"beam_size": 2, "eos_id": EOS, "max_new_tokens": 5}
    assert beam_search(step, reorder, log_probs(start), start, length_penalty=0.0, **kw) == [[]]
    assert beam_search(step, reorder, log_probs(start), start, length_penalty=1.0, **kw) == [[A, A]]


def test_greedy_stops_at_a_second_eos_id():
    first = {(): {A: 0.6, B: 0.4}, (A,): {C: 0.9, A: 0.1}, (A, C): {A: 1.0}, (A, C, A): {A: 1.0}}
    second = {(): {B: 0.9, A: 0.1}, (B,): {B: 0.8, EOS: 0.2}, (B, B): {EOS: 1.0}}
    log_probs, step, reorder = table_step(first, second)
    start = [(0, []), (1, [])]
    assert greedy_search(step, log_probs(start), start, eos_id=EOS, max_new_tokens=4) == [[A, C, A, A], [B, B]]
    for eos in ([EOS, C], (C, EOS)):
        calls = []

        def counted(tokens, state, calls=calls):
            calls.append(1)
            return step(tokens, state)

        assert greedy_search(counted, log_probs(start), start, eos_id=eos, max_new_tokens=4) == [[A], [B, B]]
        assert len(calls) == 2  # stopped once both rows ended (C, then EOS), not at max_new_tokens
        assert decode(step, reorder, log_probs(start), start, beam_size=1, eos_id=eos, max_new_tokens=4) == [[A], [B, B]]
    assert strip_eos([[1, 3, 0, 5], [0, 3], [2]], [0, 3]) == [[1], [], [2]]
    with pytest.raises(ValueError, match="eos_id"):
        greedy_search(step, log_probs(start), start, eos_id=[], max_new_tokens=4)


def test_beam_search_ends_hypotheses_at_a_second_eos_id():
    # "B C" ends at the second EOS (0.4 * 0.99); with EOS alone it must go on to "B C A A ..." and loses
    table = {(): {A: 0.6, B: 0.4}, (A,): {A: 0.34, B: 0.33, EOS: 0.33}, (A, A): {EOS: 1.0}, (B,): {C: 0.99},
             (B, C): {A: 0.1, B: 0.1}}
    log_probs, step, reorder = table_step(table)
    start = [(0, [])]
    kw = {"beam_size": 2, "max_new_tokens": 5, "length_penalty": 0.0}
    assert beam_search(step, reorder, log_probs(start), start, eos_id=[EOS, C], **kw) == [[B]]
    assert beam_search(step, reorder, log_probs(start), start, eos_id=EOS, **kw) == [[A, A]]


def test_a_beam_finished_at_a_second_eos_id_holds_one_slot_only():
    # After step 2 the beams are "A C" (finished, 0.5) and "B A" (open, 0.45). The finished one may
    # continue one way only: were both EOS ids free continuations, its two copies would fill both
    # slots and push out "B A EOS", the best per token (log 0.45 / 3 > log 0.5 / 2).
    table = {(): {A: 0.5, B: 0.5}, (A,): {C: 1.0}, (B,): {A: 0.9, EOS: 0.1}, (B, A): {EOS: 1.0}}
    log_probs, step, reorder = table_step(table)
    start = [(0, [])]
    assert beam_search(step, reorder, log_probs(start), start, beam_size=2, eos_id=[C, EOS], max_new_tokens=5,
                       length_penalty=1.0) == [[B, A]]
