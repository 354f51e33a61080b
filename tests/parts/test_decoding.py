"""Greedy and beam search over a step function, on hand-made distributions."""

import math

import pytest
import torch

from nemo_emmett.parts.decoding import beam_search, decode, greedy_search, strip_eos

EOS, A, B = 0, 1, 2


def table_step(*tables):
    """A toy 'model': the next-token distribution depends on the prefix; example ``i`` follows
    ``tables[i]`` (default: the first). The state is one (example, prefix) per row."""
    def log_probs(state):
        rows = []
        for i, prefix in state:
            probs = tables[i].get(tuple(prefix), {EOS: 1.0})
            rows.append([math.log(probs.get(v, 1e-9)) for v in range(3)])
        return torch.tensor(rows)  # (N, 3)

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
