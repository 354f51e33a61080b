"""Corpus BLEU/chrF/WER and the per-direction validation accumulator."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from nemo_emmett.parts.metrics import ScoreAccumulator, corpus_scores, corpus_wer

SENTS = ["the cat sat on the mat", "a dog runs in the park today", "we like green tea very much"]


def test_bleu_chrf_identical_and_disjoint():
    same = corpus_scores(SENTS, SENTS)
    assert same["bleu"] == pytest.approx(100.0) and same["chrf"] == pytest.approx(100.0)
    assert same["wer"] == 0.0
    disjoint = corpus_scores(["xx yy zz ww vv"] * 3, SENTS)
    assert disjoint["bleu"] < 1.0 and disjoint["chrf"] < 5.0 and disjoint["wer"] == 1.0


def test_wer_hand_examples():
    assert corpus_wer(["a b x d"], ["a b c d"]) == 0.25  # 1 substitution in 4 words
    assert corpus_wer(["a c"], ["a b c"]) == pytest.approx(1 / 3)  # deletion
    assert corpus_wer(["x a b"], ["a b"]) == 0.5  # insertion
    assert corpus_wer(["b a"], ["a b"]) == 1.0  # a swap is two edits, not one
    # corpus level: edits over all reference words, not a mean of sentence WERs
    assert corpus_wer(["a b x d", "e f"], ["a b c d", "e f"]) == pytest.approx(1 / 6)


def test_empty_inputs():
    assert corpus_scores([], []) == {}
    assert corpus_wer([""], [""]) == 0.0
    assert corpus_scores(["a b c d"], [""])["wer"] == 4.0  # insertions over no reference words
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        corpus_scores(["a", "b"], ["a"])


def test_accumulator_keys_per_direction_and_reset():
    acc = ScoreAccumulator()
    acc.update("st:en-de", SENTS[:2], SENTS[:2])
    acc.update("st:en-de", ["zz"], [SENTS[2]])
    acc.update("mt:en-fr", SENTS, SENTS)
    acc.update("asr:en-en", ["a b x d"], ["a b c d"])
    out = acc.compute()
    assert set(out) == {"bleu/st:en-de", "chrf/st:en-de", "bleu/mt:en-fr", "chrf/mt:en-fr",
                        "bleu/asr:en-en", "chrf/asr:en-en", "wer/asr:en-en", "bleu/avg"}
    assert out["wer/asr:en-en"] == 0.25
    assert out["bleu/st:en-de"] == pytest.approx(corpus_scores(SENTS[:2] + ["zz"], SENTS)["bleu"])
    assert out["bleu/avg"] == pytest.approx((out["bleu/st:en-de"] + 100.0) / 2)  # ASR left out
    acc.reset()
    assert acc.compute() == {}
    acc.update("asr:en-en", SENTS, SENTS)
    assert acc.compute()["bleu/avg"] == pytest.approx(100.0)  # only ASR: average over it


def test_chinese_target_uses_zh_tokenizer():
    acc = ScoreAccumulator()
    acc.update("st:en-zh", ["我喜欢喝绿茶"], ["我喜欢喝红茶"])
    assert 0.0 < acc.compute()["bleu/st:en-zh"] < 100.0  # 13a would see one wrong "word": BLEU 0


def _gather_worker(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        acc = ScoreAccumulator()
        acc.update("st:en-de", [SENTS[rank]], [SENTS[rank]])
        if rank == 1:
            acc.update("asr:en-en", ["a b x d"], ["a b c d"])
        Path(out_dir, f"{rank}.json").write_text(json.dumps(acc.compute()))
    finally:
        dist.destroy_process_group()


def test_compute_gathers_all_ranks(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_gather_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2))
    assert r0 == r1  # every rank sees every pair and returns the same numbers
    assert r0["wer/asr:en-en"] == 0.25  # rank 1's pair reached rank 0
    assert r0["bleu/st:en-de"] == pytest.approx(100.0)


def test_mean_accumulator_weights_by_batch_and_keeps_each_key():
    from nemo_emmett.parts.metrics import MeanAccumulator

    acc = MeanAccumulator()
    acc.update("val_loss", 2.0, 3)
    acc.update("val_loss", 4.0, 1)
    acc.update("val_loss/st", 1.0, 2)  # a key only some batches (or ranks) have
    assert acc.compute() == {"val_loss": 2.5, "val_loss/st": 1.0}
    acc.reset()
    assert acc.compute() == {}


def test_signatures_are_sacrebleu_s_own_for_the_scores_made_here():
    import sacrebleu
    from sacrebleu.metrics import BLEU, CHRF

    from nemo_emmett.parts.metrics import (
        bleu_signature,
        chrf_signature,
        score_signatures,
        scored_target_langs,
        signature_text,
    )

    for tok in ("13a", "zh"):
        ref = BLEU(tokenize=tok)
        assert ref.corpus_score(SENTS, [SENTS]).score == pytest.approx(corpus_scores(SENTS, SENTS, tokenize=tok)["bleu"])
        assert bleu_signature(tok) == str(ref.get_signature())
    ref_chrf = CHRF()
    ref_chrf.corpus_score(SENTS, [SENTS])
    assert chrf_signature() == str(ref_chrf.get_signature())
    assert bleu_signature() == f"nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:{sacrebleu.__version__}"
    assert signature_text(["de"]) == f"BLEU signature {bleu_signature()}, chrF signature {chrf_signature()}"
    # one BLEU signature per tokenizer, each with the target languages it scored
    mixed = score_signatures(["fr", "zh", "de"])["bleu"]
    assert mixed == f"{bleu_signature('13a')} (de, fr); {bleu_signature('zh')} (zh)"
    assert score_signatures(["de", "fr"])["bleu"] == bleu_signature("13a")
    acc = ScoreAccumulator()
    acc.update("st:en-de", SENTS, SENTS)
    acc.update("mt:en-zh", ["猫坐在垫子上"], ["猫坐在垫子上"])
    assert scored_target_langs(acc.compute()) == ["de", "zh"]
