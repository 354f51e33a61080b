"""Greedy and beam search over a step function with a cache, written once for every model family.

A family runs its context (prompt, source, speech) once and hands the search

* ``log_probs`` (B, V): the distribution of the first answer token, and ``state``: whatever the
  next step needs (a KV cache, attention masks, positions, speech features), one row per example;
* ``step(tokens (N,), state) -> (log_probs (N, V), state)``: feed one token per row, extend the cache;
* ``reorder(state, index (N',)) -> state``: keep rows ``index`` (repeats allowed) of every tensor
  in the state, used to expand each example to its beams and to follow beams when they swap.

Search ends at an EOS id or after ``max_new_tokens``; results are token ids without EOS. ``eos_id``
is one id or several (a ``generation_config`` with ``eos_token_id: [128001, 128009]``, as Llama 3 and
Qwen2 chat models ship): a hypothesis ends at the first of any of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

Step = Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]
Reorder = Callable[[Any, torch.Tensor], Any]
EosIds = int | Sequence[int]


def eos_list(eos_id: EosIds) -> list[int]:
    """``eos_id`` as a non-empty list of distinct ids, in the order given (the first one pads finished rows)."""
    ids = [int(eos_id)] if isinstance(eos_id, int) else list(dict.fromkeys(int(i) for i in eos_id))
    if not ids:
        raise ValueError("eos_id: give at least one EOS id")
    return ids


def strip_eos(rows: list[list[int]], eos_id: EosIds) -> list[list[int]]:
    """Each id list cut before its first EOS, any of ``eos_id`` (whole when there is none)."""
    stops = set(eos_list(eos_id))
    return [row[: next((i for i, t in enumerate(row) if t in stops), len(row))] for row in rows]


def greedy_search(step: Step, log_probs: torch.Tensor, state: Any, *, eos_id: EosIds,
                  max_new_tokens: int) -> list[list[int]]:
    """The most likely token at every step; rows that emitted an EOS keep emitting the first EOS id."""
    B = log_probs.shape[0]
    eos = eos_list(eos_id)
    stops = torch.tensor(eos, device=log_probs.device)  # (E,)
    done = torch.zeros(B, dtype=torch.bool, device=log_probs.device)
    out = []
    for t in range(max_new_tokens):
        tok = log_probs.argmax(dim=-1).masked_fill(done, eos[0])  # (B,)
        out.append(tok)
        done = done | torch.isin(tok, stops)
        if bool(done.all()) or t == max_new_tokens - 1:
            break
        log_probs, state = step(tok, state)
    if not out:
        return [[] for _ in range(B)]
    return strip_eos(torch.stack(out, dim=1).tolist(), eos)  # (B, T)


def beam_search(step: Step, reorder: Reorder, log_probs: torch.Tensor, state: Any, *, beam_size: int,
                eos_id: EosIds, max_new_tokens: int, length_penalty: float = 1.0) -> list[list[int]]:
    """Beam search with ``beam_size`` beams per example; the best finished beam by
    ``sum log p / length ** length_penalty`` (length counts EOS) wins.

    A beam that emitted an EOS (any of ``eos_id``) stays in the beam with its score frozen (it can only
    continue with the first EOS id at no cost: one continuation, so it never fills two slots), so finished and open hypotheses compete for the same slots by raw score, as in
    fairseq's and Hugging Face's beam search with one candidate list. ``beam_size=1`` is greedy."""
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    B, V = log_probs.shape
    K = beam_size
    if K > V:
        raise ValueError(f"beam_size {K} is larger than the vocabulary ({V})")
    dev = log_probs.device
    state = reorder(state, torch.arange(B, device=dev).repeat_interleave(K))  # B -> B*K rows
    log_probs = log_probs.repeat_interleave(K, dim=0)  # (B*K, V)
    scores = torch.full((B, K), float("-inf"), device=dev)
    scores[:, 0] = 0.0  # all beams start equal: only the first one may expand at step 0
    finished = torch.zeros(B, K, dtype=torch.bool, device=dev)
    lengths = torch.zeros(B, K, device=dev)
    tokens = torch.zeros(B, K, 0, dtype=torch.long, device=dev)
    eos = eos_list(eos_id)
    stops = torch.tensor(eos, device=dev)  # (E,)
    eos_only = torch.full((V,), float("-inf"), device=dev)
    eos_only[eos[0]] = 0.0
    for t in range(max_new_tokens):
        lp = log_probs.float().view(B, K, V)
        lp = torch.where(finished[..., None], eos_only, lp)  # (B, K, V)
        cand = (scores[..., None] + lp).view(B, K * V)
        scores, idx = cand.topk(K, dim=1)  # (B, K)
        src, tok = idx // V, idx % V  # (B, K): beam each candidate extends, its token
        tokens = torch.cat([tokens.gather(1, src[..., None].expand(B, K, t)), tok[..., None]], dim=2)
        was_finished = finished.gather(1, src)
        lengths = lengths.gather(1, src) + (~was_finished).float()
        finished = was_finished | torch.isin(tok, stops)
        if bool(finished.all()) or t == max_new_tokens - 1:
            break
        rows = (torch.arange(B, device=dev)[:, None] * K + src).view(-1)  # (B*K,) rows of the state to keep
        log_probs, state = step(tok.view(-1), reorder(state, rows))
    if tokens.shape[2] == 0:
        return [[] for _ in range(B)]
    normalised = scores / lengths.clamp(min=1.0) ** length_penalty  # (B, K)
    best = normalised.argmax(dim=1)  # (B,)
    chosen = tokens[torch.arange(B, device=dev), best]  # (B, T)
    return strip_eos(chosen.tolist(), eos)


def decode(step: Step, reorder: Reorder, log_probs: torch.Tensor, state: Any, *, beam_size: int, eos_id: EosIds,
           max_new_tokens: int, length_penalty: float = 1.0) -> list[list[int]]:
    """Greedy for ``beam_size == 1``, else beam search."""
    if beam_size == 1:
        return greedy_search(step, log_probs, state, eos_id=eos_id, max_new_tokens=max_new_tokens)
    return beam_search(step, reorder, log_probs, state, beam_size=beam_size, eos_id=eos_id,
                       max_new_tokens=max_new_tokens, length_penalty=length_penalty)
