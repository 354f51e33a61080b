"""Greedy target tokens of one utterance over a growing speech prefix, with the decoder's KV cache.

Each decoder position keeps the speech it saw when it was fed: its self-attention keys and values stay
in the cache while more speech arrives, and only the cross-attention keys and values are recomputed
over the new encoder states. Under wait-k that is the training mask exactly (position p sees the
speech of units < p + k, ``simul/masks.py``). A withdrawn prediction (an end of sentence before the
source ended) drops the cache; the next prediction rebuilds it in one pass, every earlier position
seeing the frames it saw before, and the withdrawn position the speech read since."""

from __future__ import annotations

import torch

from nemo_emmett.models.salm_t5 import SalmT5, SimulEncoding


class PrefixDecoder:
    """``start``: the first decoder ids (the start id, then a forced target prefix)."""

    def __init__(self, model: SalmT5, start: list[int]):
        self.model, self.start = model, list(start)
        self.reset()

    def reset(self) -> None:
        self.tokens = list(self.start)
        """Decoder input ids so far: ``start``, then the accepted tokens."""
        self.seen: list[int] = []
        """Speech frames each fed position saw."""
        self.cached = 0
        self.cache = None
        self.enc: SimulEncoding | None = None

    @property
    def written(self) -> list[int]:
        """The accepted tokens (after ``start``)."""
        return self.tokens[len(self.start):]

    @property
    def target(self) -> list[int]:
        """The target positions so far: everything after the start id (a forced prefix, then the accepted
        tokens), as policies and the training masks count them."""
        return self.tokens[1:]

    def set_source(self, enc: SimulEncoding) -> None:
        """The encoder states of the speech read so far (one row); earlier positions keep what they saw."""
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        self.enc = enc
        if self.cache is not None:  # new cross-attention keys and values over the longer source
            self.cache = EncoderDecoderCache(self.cache.self_attention_cache, DynamicCache())

    @torch.no_grad()
    def predict(self) -> int:
        """The most likely next token, seeing the speech read so far; :meth:`accept` or :meth:`withdraw` it."""
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        if self.enc is None:
            raise RuntimeError("PrefixDecoder.predict before any speech: call set_source first")
        if self.cached == len(self.tokens):
            raise RuntimeError("PrefixDecoder.predict twice for one position: accept or withdraw the first")
        frames = int(self.enc.speech_lens[0])
        self.seen += [frames] * (len(self.tokens) - len(self.seen))
        if self.cache is None:
            self.cache, self.cached = EncoderDecoderCache(DynamicCache(), DynamicCache()), 0
        device = self.enc.states.device
        ids = torch.tensor([self.tokens[self.cached:]], device=device)  # (1, n)
        visible = torch.tensor([self.seen[self.cached:]], device=device)  # (1, n)
        logits = self.model.simul_decoder_logits(self.enc, ids, visible, self.cache)  # (1, n, V)
        self.cached = len(self.tokens)
        return int(logits[0, -1].argmax())

    def accept(self, token: int) -> None:
        self.tokens.append(token)

    def withdraw(self) -> None:
        """Drop the last prediction: its position is fed again, with the speech read by then."""
        self.seen.pop()
        self.cache, self.cached = None, 0

    @torch.no_grad()
    def hypothesis(self, max_tokens: int, eos_ids: list[int]) -> list[int]:
        """The whole greedy hypothesis over the speech read so far, as :attr:`target` counts it: the
        forced prefix and the accepted tokens, then greedy tokens to an EOS (excluded) or ``max_tokens``
        accepted and new ones in all (local agreement). Leaves this decoder as it was."""
        other = PrefixDecoder(self.model, self.tokens)
        other.set_source(self.enc)
        while len(self.tokens) - len(self.start) + len(other.written) < max_tokens:
            token = other.predict()
            if token in eos_ids:
                break
            other.accept(token)
        return [*self.target, *other.written]
