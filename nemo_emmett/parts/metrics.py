"""Corpus BLEU / chrF / WER, and a validation accumulator keyed by task and direction.

Keys are ``"<task>:<src>-<tgt>"`` (``"st:en-de"``, ``"asr:en-en"``). Scores are corpus-level
(sacrebleu; never an average of sentence scores), so they must see the whole validation set:
under ``torch.distributed`` :meth:`ScoreAccumulator.compute` gathers every rank's pairs with
``all_gather_object`` first, and every rank returns the same numbers (log them without
``sync_dist``). With NCCL, ``all_gather_object`` needs ``torch.cuda.set_device`` done, as
Lightning does. Duplicates that a padding DistributedSampler adds are not removed.

Every score that is printed or written carries sacrebleu's own signature of the metric that made it
(:func:`score_signatures`, :func:`signature_text`: ``nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0``),
so that numbers from different runs, tokenizers or sacrebleu versions are never compared blindly.
"""

from __future__ import annotations

import functools
import statistics
from collections import defaultdict
from collections.abc import Iterable

import torch.distributed as dist
from sacrebleu.metrics import BLEU, CHRF

# Scripts without spaces between words; everything else uses sacrebleu's default "13a".
_BLEU_TOKENIZE = {"zh": "zh", "ja": "char", "th": "char"}


def bleu_tokenize(target_lang: str) -> str:
    """sacrebleu's tokenizer for BLEU into ``target_lang``."""
    return _BLEU_TOKENIZE.get(target_lang, "13a")


def bleu_metric(tokenize: str = "13a") -> BLEU:
    """The BLEU every score here comes from (sacrebleu's defaults otherwise: exp smoothing, cased)."""
    return BLEU(tokenize=tokenize)


def chrf_metric() -> CHRF:
    """The chrF every score here comes from (chrF2: character 6-grams, no word n-grams)."""
    return CHRF()


@functools.cache
def bleu_signature(tokenize: str = "13a") -> str:
    """sacrebleu's signature of :func:`bleu_metric` with one reference per hypothesis, e.g.
    ``nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0``."""
    metric = bleu_metric(tokenize)
    metric.corpus_score(["a"], [["a"]])  # sacrebleu knows nrefs only after scoring
    return str(metric.get_signature())


@functools.cache
def chrf_signature() -> str:
    """sacrebleu's signature of :func:`chrf_metric` with one reference per hypothesis."""
    metric = chrf_metric()
    metric.corpus_score(["a"], [["a"]])
    return str(metric.get_signature())


def score_signatures(target_langs: Iterable[str]) -> dict[str, str]:
    """``{"bleu": ..., "chrf": ...}``: the signatures of scores into ``target_langs``. BLEU's tokenizer
    depends on the target language; when directions use several, BLEU's entry lists each signature
    with its languages: ``nrefs:1|...|tok:13a|... (de, fr); nrefs:1|...|tok:zh|... (zh)``."""
    by_tok: dict[str, list[str]] = defaultdict(list)
    for lang in sorted(set(target_langs)) or ["und"]:
        by_tok[bleu_tokenize(lang)].append(lang)
    bleu = (bleu_signature(next(iter(by_tok))) if len(by_tok) == 1 else
            "; ".join(f"{bleu_signature(tok)} ({', '.join(langs)})" for tok, langs in sorted(by_tok.items())))
    return {"bleu": bleu, "chrf": chrf_signature()}


def signature_text(target_langs: Iterable[str]) -> str:
    """``BLEU signature <sig>, chrF signature <sig>``: what a line of printed scores ends with."""
    sigs = score_signatures(target_langs)
    return f"BLEU signature {sigs['bleu']}, chrF signature {sigs['chrf']}"


def scored_target_langs(scores: dict[str, float]) -> list[str]:
    """The target languages of the directions in a :meth:`ScoreAccumulator.compute` result."""
    keys = [k.partition("/")[2] for k in scores if k.startswith("bleu/") and k != "bleu/avg"]
    return sorted({k.rpartition("-")[2] for k in keys})


def corpus_wer(hyps: list[str], refs: list[str]) -> float:
    """Total word edits / total reference words (a ratio, not %): NeMo's ``word_error_rate``, except that
    all-empty references divide by 1 (NeMo returns inf), so the score stays a finite count of insertions."""
    from nemo.collections.asr.metrics.wer import word_error_rate  # the ASR collection: ~9 s, only when scored

    if not any(r.split() for r in refs):
        return float(sum(len(h.split()) for h in hyps))
    return word_error_rate(hyps, refs)


def corpus_scores(hyps: list[str], refs: list[str], *, tokenize: str = "13a") -> dict[str, float]:
    """``{"bleu", "chrf", "wer"}`` over the corpus; BLEU and chrF in 0-100, WER a ratio.

    Empty input gives ``{}``: there is nothing to score, and 0 would look like a real result.
    """
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    if not hyps:
        return {}
    return {
        "bleu": bleu_metric(tokenize).corpus_score(hyps, [refs]).score,
        "chrf": chrf_metric().corpus_score(hyps, [refs]).score,
        "wer": corpus_wer(hyps, refs),
    }


def all_gather_objects(obj):
    """Every rank's ``obj`` (a list of one under a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    per_rank: list = [None] * dist.get_world_size()
    dist.all_gather_object(per_rank, obj)
    return per_rank


class MeanAccumulator:
    """Weighted means of named values over a validation pass, reduced over every rank at the end.

    Lightning's ``self.log(..., sync_dist=True)`` reduces each key with one collective, so every rank
    must log the same keys; per-task losses differ between ranks (one holds a text batch, another an
    audio one; component-aware training validates each rank's own tasks), so they are gathered here
    instead, in one ``all_gather_object`` that does not care which keys a rank saw."""

    def __init__(self) -> None:
        self._sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])

    def update(self, key: str, value: float, weight: float) -> None:
        s = self._sums[key]
        s[0] += value * weight
        s[1] += weight

    def reset(self) -> None:
        self._sums.clear()

    def compute(self) -> dict[str, float]:
        """{key: weighted mean over every rank}; the same on every rank."""
        total: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        for sums in all_gather_objects(dict(self._sums)):
            for key, (v, w) in sums.items():
                total[key][0] += v
                total[key][1] += w
        return {k: v / w for k, (v, w) in sorted(total.items()) if w > 0}


class ScoreAccumulator:
    """Collects (key, hyp, ref) during validation; scores each direction in :meth:`compute`."""

    def __init__(self) -> None:
        self._pairs: dict[str, list[tuple[str, str]]] = defaultdict(list)

    def update(self, key: str, hyps: list[str], refs: list[str]) -> None:
        if len(hyps) != len(refs):
            raise ValueError(f"{key}: {len(hyps)} hypotheses but {len(refs)} references")
        self._pairs[key].extend(zip(hyps, refs))

    def reset(self) -> None:
        self._pairs.clear()

    def _gathered(self) -> dict[str, list[tuple[str, str]]]:
        merged: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for pairs in all_gather_objects(dict(self._pairs)):
            for key, items in pairs.items():
                merged[key].extend(items)
        return merged

    def compute(self) -> dict[str, float]:
        """``bleu/<key>``, ``chrf/<key>``, ``wer/<key>`` (asr keys only) and ``bleu/avg``.

        ``bleu/avg`` is the mean over translation directions (non-asr keys), falling back to
        all directions when there are only ASR ones, so a checkpoint monitor always finds it.
        """
        out: dict[str, float] = {}
        bleu_mt, bleu_all = [], []
        for key, pairs in sorted(self._gathered().items()):
            hyps, refs = [h for h, _ in pairs], [r for _, r in pairs]
            task, _, direction = key.partition(":")
            tgt = direction.rpartition("-")[2]
            scores = corpus_scores(hyps, refs, tokenize=bleu_tokenize(tgt))
            if not scores:
                continue
            out[f"bleu/{key}"], out[f"chrf/{key}"] = scores["bleu"], scores["chrf"]
            bleu_all.append(scores["bleu"])
            if task == "asr":
                out[f"wer/{key}"] = scores["wer"]
            else:
                bleu_mt.append(scores["bleu"])
        if bleu_all:
            out["bleu/avg"] = statistics.fmean(bleu_mt or bleu_all)
        return out
