"""Read/write policies of simultaneous translation: wait-k, fixed-chunk (read n, write m), local agreement.

A policy sees the source in **units**: ``stride`` speech encoder frames each (4 frames of 80 ms: a
320 ms unit), counted as they are read, and whether the source has ended; and the target in tokens
written so far. It answers READ (wait for the next unit) or WRITE (the next target token now). Once
the source has ended every policy writes until the hypothesis ends.

* ``wait-k`` (Ma et al., 2019, STACL; on speech: units instead of words): target token ``i``
  (0-based) is written once ``i + k`` units are read; the masks of prefix-to-prefix training
  (``masks.py``) give token ``i`` exactly that prefix.
* ``fixed-chunk`` (read-n-write-m): after each chunk of ``n`` units, ``m`` more tokens; before the first
  chunk, nothing.
* ``local-agreement`` (LA-n, Liu et al., 2020; Polák et al., 2022; Whisper-Streaming): after each unit
  the session decodes the whole hypothesis (the written tokens forced) and hands it to
  :meth:`LocalAgreement.observe`; the policy writes the longest common prefix of the last ``agreement``
  hypotheses (2: LA-2) beyond what is written. The tokens to write come from the policy
  (:attr:`LocalAgreement.agreed`), not from a new decoder step.

The token counts include a forced target prefix (the target-language code of NLLB/mBART), as the
training masks count target positions."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from enum import Enum
from typing import Any, ClassVar


class Action(str, Enum):
    READ = "R"
    WRITE = "W"


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return value


class Policy(ABC):
    """When to read and when to write; ``stride``: speech encoder frames per unit of the source."""

    name: ClassVar[str]
    needs_hypothesis: ClassVar[bool] = False
    """Whether the session must decode the full hypothesis after each unit read (:meth:`observe`)."""

    def __init__(self, *, stride: int = 4):
        self.stride = _positive("stride", stride)

    def reset(self) -> None:  # noqa: B027  (an optional hook: stateless policies keep the default)
        """Forget the utterance (a new one starts)."""

    @abstractmethod
    def decide(self, read: int, finished: bool, written: int) -> Action:
        """``read``: units read, ``finished``: whether the source has ended, ``written``: target tokens written."""

    def observe(self, hypothesis: Sequence[int], finished: bool) -> None:
        """The full hypothesis decoded after a unit was read (only for ``needs_hypothesis`` policies)."""
        raise TypeError(f"policy {self.name!r} decides without hypotheses")


class WaitK(Policy):
    name = "wait-k"

    def __init__(self, *, k: int = 3, stride: int = 4):
        super().__init__(stride=stride)
        self.k = _positive("k", k)

    def decide(self, read: int, finished: bool, written: int) -> Action:
        return Action.WRITE if finished or read >= written + self.k else Action.READ

    def __repr__(self) -> str:
        return f"WaitK(k={self.k}, stride={self.stride})"


class FixedChunk(Policy):
    name = "fixed-chunk"

    def __init__(self, *, n: int = 1, m: int = 1, stride: int = 4):
        super().__init__(stride=stride)
        self.n, self.m = _positive("n", n), _positive("m", m)

    def decide(self, read: int, finished: bool, written: int) -> Action:
        return Action.WRITE if finished or written < (read // self.n) * self.m else Action.READ

    def __repr__(self) -> str:
        return f"FixedChunk(n={self.n}, m={self.m}, stride={self.stride})"


def common_prefix(rows: Sequence[Sequence[int]]) -> list[int]:
    """The longest common prefix of the sequences (empty for none)."""
    if not rows:
        return []
    out = []
    for column in zip(*rows):
        if any(t != column[0] for t in column[1:]):
            break
        out.append(column[0])
    return out


class LocalAgreement(Policy):
    name = "local-agreement"
    needs_hypothesis = True

    def __init__(self, *, agreement: int = 2, stride: int = 4):
        super().__init__(stride=stride)
        if _positive("agreement", agreement) < 2:
            raise ValueError(f"agreement: expected at least 2 hypotheses to agree (LA-2), got {agreement}")
        self.agreement = agreement
        self.reset()

    def reset(self) -> None:
        self.history: list[list[int]] = []
        self.agreed: list[int] = []
        """The tokens agreed so far (the written ones first): what WRITE writes, in order."""

    def observe(self, hypothesis: Sequence[int], finished: bool) -> None:
        self.history = [*self.history, list(hypothesis)][-self.agreement:]
        if finished:  # nothing more to agree with: the last hypothesis stands
            agreed = list(hypothesis)
        elif len(self.history) < self.agreement:
            agreed = []
        else:
            agreed = common_prefix(self.history)
        if len(agreed) > len(self.agreed):  # never take back what was agreed (it may be written already)
            self.agreed = agreed

    def decide(self, read: int, finished: bool, written: int) -> Action:
        return Action.WRITE if written < len(self.agreed) else Action.READ

    def __repr__(self) -> str:
        return f"LocalAgreement(agreement={self.agreement}, stride={self.stride})"


POLICIES: dict[str, type[Policy]] = {p.name: p for p in (WaitK, FixedChunk, LocalAgreement)}


def build_policy(name: str, **kwargs: Any) -> Policy:
    """The policy ``name`` (``wait-k``: k, stride; ``fixed-chunk``: n, m, stride; ``local-agreement``:
    agreement, stride); an unknown name or argument is an error naming it."""
    if name not in POLICIES:
        raise ValueError(f"unknown simultaneous policy {name!r}; expected one of {sorted(POLICIES)}")
    try:
        return POLICIES[name](**kwargs)
    except TypeError as e:
        raise ValueError(f"policy {name!r}: {e}") from e


def schedule(policy: Policy, units: int, hypotheses: Sequence[Sequence[int]] | int) -> str:
    """The policy's READ/WRITE string over a source of ``units`` units (``R``: one unit read, ``W``: one
    token written), for a target of ``hypotheses`` tokens (an int) or, for a hypothesis policy, the
    hypothesis decoded after each unit (``units`` of them, the last one when the source has ended).
    What the session does, without a model: to test and explain policies."""
    policy.reset()
    out, read, written = [], 0, 0
    target = hypotheses if isinstance(hypotheses, int) else None
    while True:
        finished = read == units
        if policy.needs_hypothesis and read > 0 and len(out) and out[-1] == Action.READ.value:
            policy.observe(hypotheses[read - 1], finished)
        done = written == (target if target is not None else len(hypotheses[-1]))
        if done and finished:
            return "".join(out)
        if not done and policy.decide(read, finished, written) == Action.WRITE:
            out.append(Action.WRITE.value)
            written += 1
        elif finished:  # a hypothesis policy that agreed on fewer tokens than the final hypothesis
            return "".join(out)
        else:
            out.append(Action.READ.value)
            read += 1
