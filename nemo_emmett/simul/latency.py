"""Latency of simultaneous translation (AL, LAAL, DAL, AP and their computation-aware variants), with BLEU.

Pure functions on one sentence's **delays**: ``delays[i]`` is how much source had been read when
target word ``i`` was written, in the source's unit (milliseconds for speech, tokens for text). The
definitions are SimulEval 1.1.4's (``simuleval/evaluator/scorers/latency_scorer.py``), so that our
numbers and a ``simuleval`` run on the same delays agree exactly:

- ``|X|``, the source length: its duration in ms (speech) or its token count (text);
- ``|Y|``, the target length: the **reference's** word count when there is a reference (SimulEval's
  default, ``--no-use-ref-len`` off), else the hypothesis's;
- ``tau``: the (1-based) index of the first word written with the whole source read
  (``delays[i] >= |X|``), or the hypothesis length when there is none.

Computation-aware (``_CA``) variants are the same formulas on **elapsed** times instead of delays:
``elapsed[i] = delays[i] + wall-clock time since the source started, in ms``, the time a listener
really waits (SimulEval's ``--computation-aware``). They exist for speech sources only. Beware that
SimulEval 1.1.4 run with ``--computation-aware`` makes its plain columns (``AL``, ...) computation-aware
too (each scorer's ``from_args`` reads the flag): only its ``_CA`` columns are comparable across runs;
:func:`score_directions` reports both.

Corpus values are plain means of the sentence values over the sentences that wrote at least one
word (SimulEval skips an empty hypothesis, with a warning); BLEU is sacrebleu's corpus BLEU with its
signature (:mod:`nemo_emmett.parts.metrics`).
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nemo_emmett.parts.metrics import bleu_metric, bleu_signature, bleu_tokenize, chrf_metric

METRICS = ("AL", "LAAL", "DAL", "AP")
"""Latency metrics of :func:`sentence_latency`; each also as ``<name>_CA`` (computation-aware)."""


def _check(delays: Sequence[float], source_length: float) -> None:
    if source_length <= 0:
        raise ValueError(f"source_length must be > 0 (ms of speech or source tokens), got {source_length!r}")
    if not delays:
        raise ValueError("delays is empty: an empty hypothesis has no latency (sentence_latency skips it)")


def _tau_sum(delays: Sequence[float], source_length: float, gamma: float) -> float:
    """``1/tau * sum_{i=1..tau} (d_i - (i-1)/gamma)``: the lagging of AL and LAAL at rate ``gamma``."""
    total, tau = 0.0, 0
    for i, d in enumerate(delays):  # i = (1-based index) - 1
        total += d - i / gamma
        tau = i + 1
        if d >= source_length:
            break
    return total / tau


def average_lagging(delays: Sequence[float], source_length: float, target_length: int | None = None) -> float:
    """Average Lagging, Ma et al. 2019 (STACL, arXiv 1810.08398), Eq. 4, as SimulEval computes it.

    ``AL = 1/tau * sum_{i=1..tau} (d_i - (i-1) / gamma)`` with ``gamma = |Y| / |X|``: how far each
    word lags behind an ideal translator that writes at the rate ``gamma`` from time 0.
    ``target_length`` (``|Y|``) is the reference's length; None: the hypothesis's. When the first
    word comes after the whole source (``d_1 >= |X|``), tau is 1 and AL is ``d_1``."""
    _check(delays, source_length)
    gamma = (target_length or len(delays)) / source_length
    return _tau_sum(delays, source_length, gamma)


def length_adaptive_average_lagging(delays: Sequence[float], source_length: float,
                                    target_length: int | None = None) -> float:
    """Length-Adaptive Average Lagging, Papi et al. 2022 (arXiv 2206.05807; first used in
    Polák et al. 2022, arXiv 2204.06028): AL with ``gamma = max(|hypothesis|, |reference|) / |X|``,
    so that writing more words than the reference cannot lower the score (AL's rate uses the
    reference length alone, and an over-long hypothesis then "gets ahead" of the ideal translator)."""
    _check(delays, source_length)
    gamma = max(len(delays), target_length or 0) / source_length
    return _tau_sum(delays, source_length, gamma)


def differentiable_average_lagging(delays: Sequence[float], source_length: float) -> float:
    """Differentiable Average Lagging, Arivazhagan et al. 2019 (MILk, arXiv 1906.05218), Eq. 7.

    ``d'_1 = d_1``, ``d'_i = max(d_i, d'_{i-1} + 1/gamma)``, ``DAL = 1/|Y| * sum_i (d'_i - (i-1)/gamma)``
    with ``gamma = |Y| / |X|`` over **all** words: a word cannot come sooner than ``1/gamma`` after the
    previous one, so writing many words at once is charged. ``|Y|`` is always the hypothesis's
    length here (as in SimulEval, which ignores the reference for DAL)."""
    _check(delays, source_length)
    gamma = len(delays) / source_length
    total, previous = 0.0, 0.0
    for i, d in enumerate(delays):
        current = d if i == 0 else max(d, previous + 1 / gamma)
        total += current - i / gamma
        previous = current
    return total / len(delays)


def average_proportion(delays: Sequence[float], source_length: float, target_length: int | None = None) -> float:
    """Average Proportion, Cho & Esipova 2016 (arXiv 1606.02012): ``AP = 1/(|X| |Y|) * sum_i d_i``,
    the mean fraction of the source read per word (1 for offline translation). The sum runs over the
    hypothesis's words; ``|Y|`` is the reference's length when given (SimulEval's choice)."""
    _check(delays, source_length)
    return sum(delays) / (source_length * (target_length or len(delays)))


def sentence_latency(delays: Sequence[float], source_length: float, target_length: int | None = None,
                     elapsed: Sequence[float] | None = None) -> dict[str, float]:
    """``{AL, LAAL, DAL, AP}`` of one sentence, plus ``{AL_CA, ...}`` when ``elapsed`` is given;
    ``{}`` for an empty hypothesis (no word, no delay: nothing to measure)."""
    if not delays:
        return {}
    out = {"AL": average_lagging(delays, source_length, target_length),
           "LAAL": length_adaptive_average_lagging(delays, source_length, target_length),
           "DAL": differentiable_average_lagging(delays, source_length),
           "AP": average_proportion(delays, source_length, target_length)}
    if elapsed is not None:
        if len(elapsed) != len(delays):
            raise ValueError(f"elapsed has {len(elapsed)} values but delays has {len(delays)}: one per word")
        ca = sentence_latency(elapsed, source_length, target_length)
        out |= {f"{k}_CA": v for k, v in ca.items()}
    return out


def reference_length(reference: str | None) -> int | None:
    """Words of a reference (SimulEval's ``--eval-latency-unit word``); None or blank: None, and the
    hypothesis length is used instead. SimulEval splits on single spaces (a blank reference counts 1
    word); we split on whitespace, which agrees for every reference without doubled spaces."""
    n = len(reference.split()) if reference is not None else 0
    return n or None


@dataclass
class SimulInstance:
    """One translated sentence as a simultaneous system produced it (a line of SimulEval's
    ``instances.log`` holds the same fields)."""

    prediction: str
    """The hypothesis, words separated by spaces; word ``i`` was written at ``delays[i]``."""
    delays: list[float]
    source_length: float
    """ms of speech, or source tokens."""
    reference: str | None = None
    elapsed: list[float] | None = None
    """Computation-aware delays (ms); None or empty: not measured (text sources)."""
    direction: str = "und-und"
    """``<src>-<tgt>``: the key its scores are aggregated under; BLEU's tokenizer follows ``<tgt>``."""

    def latency(self, *, use_ref_len: bool = True) -> dict[str, float]:
        """:func:`sentence_latency` of this sentence (the reference's length when ``use_ref_len``)."""
        if len(self.delays) != len(self.prediction.split()):
            raise ValueError(f"{len(self.delays)} delays for {len(self.prediction.split())} words "
                             f"in {self.prediction!r}: one delay per written word")
        target_length = reference_length(self.reference) if use_ref_len else None
        return sentence_latency(self.delays, self.source_length, target_length, self.elapsed or None)


def corpus_latency(instances: Iterable[SimulInstance], *, use_ref_len: bool = True) -> dict[str, float]:
    """Mean of each sentence metric over the sentences with at least one word (SimulEval's corpus
    value); a metric no sentence has is absent (``{}`` when every hypothesis is empty)."""
    per_metric: dict[str, list[float]] = defaultdict(list)
    for ins in instances:
        for name, value in ins.latency(use_ref_len=use_ref_len).items():
            per_metric[name].append(value)
    return {name: statistics.fmean(values) for name, values in per_metric.items()}


def score_directions(instances: Iterable[SimulInstance], *, use_ref_len: bool = True,
                     tokenize: str | None = None) -> dict[str, dict[str, float | str | int]]:
    """Per direction: ``BLEU`` (sacrebleu corpus BLEU, the target language's tokenizer unless
    ``tokenize`` is given), ``bleu_signature``, ``chrF`` (sacrebleu chrF2; BLEU is near 0 where a
    target word is long and rare, e.g. German numbers written as one word), ``n`` (sentences) and
    :func:`corpus_latency`."""
    by_direction: dict[str, list[SimulInstance]] = defaultdict(list)
    for ins in instances:
        by_direction[ins.direction].append(ins)
    out: dict[str, dict[str, float | str | int]] = {}
    for direction, group in sorted(by_direction.items()):
        missing = [i for i, ins in enumerate(group) if ins.reference is None]
        if missing:
            raise ValueError(f"direction {direction!r}: sentences {missing[:5]} have no reference to score BLEU on")
        tok = tokenize or bleu_tokenize(direction.rpartition("-")[2])
        hyps, refs = [ins.prediction for ins in group], [[ins.reference for ins in group]]
        bleu = bleu_metric(tok).corpus_score(hyps, refs)
        chrf = chrf_metric().corpus_score(hyps, refs)
        out[direction] = {"BLEU": bleu.score, "bleu_signature": bleu_signature(tok), "chrF": chrf.score, "n": len(group),
                          **corpus_latency(group, use_ref_len=use_ref_len)}
    return out


def read_instances_log(path: str | Path, *, direction: str = "und-und",
                       computation_aware: bool = True) -> list[SimulInstance]:
    """The sentences of a SimulEval ``instances.log`` (one JSON object per line). Text sources log
    ``elapsed`` as zeros: read those with ``computation_aware=False``."""
    out = []
    for n, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            info = json.loads(line)
            out.append(SimulInstance(prediction=info["prediction"], delays=list(info["delays"]),
                                     source_length=float(info["source_length"]), reference=info.get("reference"),
                                     elapsed=list(info.get("elapsed") or []) if computation_aware else None,
                                     direction=direction))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path}:{n}: not a SimulEval instance line with prediction, delays and "
                             f"source_length ({type(e).__name__}: {e})") from e
    return out
