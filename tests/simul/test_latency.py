"""Latency metrics: hand-computed AL / LAAL / DAL / AP, and equality with SimulEval 1.1.4's scorers."""

from __future__ import annotations

import json
import random
from argparse import Namespace

import pytest
from sacrebleu.metrics import BLEU, CHRF

from nemo_emmett.simul.latency import (
    SimulInstance,
    average_lagging,
    average_proportion,
    corpus_latency,
    differentiable_average_lagging,
    length_adaptive_average_lagging,
    read_instances_log,
    score_directions,
    sentence_latency,
)

SIMULEVAL = "SimulEval is a test-only extra (bash scripts/setup.sh --test installs it)"

# Speech: 1000 ms of source, 5 words written at these ms, a 4-word reference.
SPEECH = {"delays": [200, 400, 600, 1000, 1000], "source_length": 1000, "reference": "a b c d",
          "elapsed": [250, 480, 700, 1150, 1200]}


def test_hand_computed_speech_values():
    d, x = SPEECH["delays"], SPEECH["source_length"]
    # AL: 1/gamma = 1000/4 = 250 ms; tau = 4 (the first delay >= 1000): (200 + 150 + 100 + 250) / 4
    assert average_lagging(d, x, 4) == 175.0
    # LAAL: 1/gamma = 1000/max(5, 4) = 200: (200 + 200 + 200 + 400) / 4
    assert length_adaptive_average_lagging(d, x, 4) == 250.0
    # DAL: 1/gamma = 1000/5 = 200; d' = 200, 400, 600, 1000, 1200 -> (200+200+200+400+400) / 5
    assert differentiable_average_lagging(d, x) == 280.0
    assert average_proportion(d, x, 4) == 3200 / 4000
    # Without a reference |Y| is the hypothesis's: AL becomes LAAL, AP divides by 5 words.
    assert average_lagging(d, x) == 250.0
    assert average_proportion(d, x) == 3200 / 5000


def test_hand_computed_computation_aware_values():
    scores = sentence_latency(SPEECH["delays"], 1000, 4, elapsed=SPEECH["elapsed"])
    assert scores["AL"] == 175.0
    assert scores["AL_CA"] == (250 + 230 + 200 + 400) / 4  # 1/gamma 250, tau 4 (1150 >= 1000)
    assert scores["LAAL_CA"] == (250 + 280 + 300 + 550) / 4  # 1/gamma 200
    assert scores["DAL_CA"] == (250 + 280 + 300 + 550 + 550) / 5  # d'_5 = max(1200, 1150 + 200)
    assert scores["AP_CA"] == 3780 / 4000


def test_hand_computed_text_values():
    """Text source of 4 tokens, wait-2: words at 2, 3, 4, 4 tokens read; lagging 2 tokens throughout."""
    d = [2, 3, 4, 4]
    assert average_lagging(d, 4, 4) == 2.0
    assert length_adaptive_average_lagging(d, 4, 4) == 2.0
    assert differentiable_average_lagging(d, 4) == 2.0
    assert average_proportion(d, 4, 4) == 13 / 16


def test_edge_cases():
    # The first word after the whole source (a computation-aware delay can be): AL and LAAL are d_1.
    assert average_lagging([1200, 1300], 1000, 3) == 1200.0
    assert length_adaptive_average_lagging([1200, 1300], 1000, 3) == 1200.0
    assert differentiable_average_lagging([1200, 1300], 1000) == 1200.0  # d'_2 = 1200 + 500
    # Never the whole source read: tau is the hypothesis length.
    assert average_lagging([100, 200], 1000, 2) == (100 + 200 - 500) / 2
    # An empty hypothesis has no latency, and the corpus means skip it.
    assert sentence_latency([], 1000, 4) == {}
    empty = SimulInstance(prediction="", delays=[], source_length=1000, reference="a b")
    one = SimulInstance(prediction="x y", delays=[500, 1000], source_length=1000, reference="a b")
    assert corpus_latency([empty, one]) == pytest.approx(one.latency())
    assert corpus_latency([empty]) == {}
    with pytest.raises(ValueError, match="source_length must be > 0"):
        average_lagging([1], 0)
    with pytest.raises(ValueError, match="one delay per written word"):
        SimulInstance(prediction="x y z", delays=[1, 2], source_length=10).latency()
    with pytest.raises(ValueError, match="elapsed has 1 values but delays has 2"):
        sentence_latency([1, 2], 10, elapsed=[5])


def test_bleu_per_direction_with_signature():
    ins = [SimulInstance("das ist gut", [1, 2, 3], 3, "das ist gut", direction="en-de"),
           SimulInstance("das ist", [1, 3], 3, "das ist schlecht", direction="en-de"),
           SimulInstance("这 是", [1, 2], 2, "这 是 好", direction="en-zh")]
    scores = score_directions(ins)
    assert sorted(scores) == ["en-de", "en-zh"]
    de = BLEU(tokenize="13a").corpus_score(["das ist gut", "das ist"], [["das ist gut", "das ist schlecht"]])
    assert scores["en-de"]["BLEU"] == de.score
    de_chrf = CHRF().corpus_score(["das ist gut", "das ist"], [["das ist gut", "das ist schlecht"]])
    assert scores["en-de"]["chrF"] == de_chrf.score and 0 < de_chrf.score < 100
    assert "tok:13a" in scores["en-de"]["bleu_signature"] and "tok:zh" in scores["en-zh"]["bleu_signature"]
    assert scores["en-de"]["n"] == 2
    assert scores["en-de"]["AL"] == pytest.approx(corpus_latency(ins[:2])["AL"])
    with pytest.raises(ValueError, match="'en-fr': sentences \\[0\\] have no reference"):
        score_directions([SimulInstance("a", [1], 1, None, direction="en-fr")])


# ---- equality with SimulEval ---------------------------------------------------------------------
def _random_sentences(seed: int, n: int, *, speech: bool) -> list[SimulInstance]:
    """Monotone delays inside the source, some past it when computation-aware, ragged lengths."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        x = rng.choice([640.0, 1000.0, 1920.0]) if speech else float(rng.randint(2, 12))
        words = rng.randint(1, 12)
        step = 320.0 if speech else 1.0
        delays = sorted(min(x, step * rng.randint(1, int(x // step) + 1)) for _ in range(words))
        elapsed = [d + rng.uniform(0, 900) * (i + 1) for i, d in enumerate(delays)] if speech else None
        ref = " ".join("w" for _ in range(rng.randint(1, 12)))
        out.append(SimulInstance(" ".join(f"h{i}" for i in range(words)), delays, x, ref, elapsed))
    return out


def _simuleval_instances(sentences: list[SimulInstance], *, speech: bool) -> dict:
    """SimulEval's own instance objects with the same delays (its evaluator's ``instances`` dict)."""
    from simuleval.evaluator.instance import SpeechToTextInstance, TextToTextInstance

    args = Namespace(eval_latency_unit="word")
    out = {}
    for i, s in enumerate(sentences):
        if speech:
            ins = SpeechToTextInstance(i, None, args)
            ins.sample_rate_value = 16000  # source_length = samples * 1000 / rate, in ms
            ins.sample_list = [0.0] * int(s.source_length * 16)
            ins.elapsed = list(s.elapsed)
        else:
            ins = TextToTextInstance(i, None, args)
            ins.source = ["s"] * int(s.source_length)  # tokens
        ins.reference, ins.delays, ins.prediction_list = s.reference, list(s.delays), s.prediction.split()
        out[i] = ins
    return out


@pytest.mark.parametrize("speech", [True, False], ids=["speech-ms", "text-tokens"])
@pytest.mark.parametrize("use_ref_len", [True, False], ids=["ref-len", "hyp-len"])
def test_equal_to_simuleval_scorers(speech, use_ref_len):
    pytest.importorskip("simuleval", reason=SIMULEVAL)
    from simuleval.evaluator.scorers.latency_scorer import LATENCY_SCORERS_DICT

    sentences = _random_sentences(7, 40, speech=speech)
    sentences.append(SimulInstance("", [], sentences[0].source_length, "a b", [] if speech else None))  # skipped
    instances = _simuleval_instances(sentences, speech=speech)
    ours = corpus_latency(sentences, use_ref_len=use_ref_len)
    for name in ("AL", "LAAL", "DAL", "AP"):
        for aware in [False, True] if speech else [False]:
            scorer = LATENCY_SCORERS_DICT[name](computation_aware=aware, use_ref_len=use_ref_len)
            theirs = scorer(instances)
            key = f"{name}_CA" if aware else name
            assert ours[key] == pytest.approx(theirs, rel=1e-12), key
            for i, s in enumerate(sentences[:-1]):  # and each sentence's value
                assert s.latency(use_ref_len=use_ref_len)[key] == pytest.approx(instances[i].metrics[name], rel=1e-12)
    if not speech:  # SimulEval has no computation-aware latency for text sources
        with pytest.raises(RuntimeError, match="not supported on text input"):
            LATENCY_SCORERS_DICT["AL"](computation_aware=True)(instances)


def test_hand_values_equal_simuleval():
    pytest.importorskip("simuleval", reason=SIMULEVAL)
    from simuleval.evaluator.scorers.latency_scorer import LATENCY_SCORERS_DICT

    s = SimulInstance("v w x y z", SPEECH["delays"], 1000, SPEECH["reference"], SPEECH["elapsed"])
    instances = _simuleval_instances([s], speech=True)
    expected = {"AL": 175.0, "LAAL": 250.0, "DAL": 280.0, "AP": 0.8}
    for name, value in expected.items():
        assert LATENCY_SCORERS_DICT[name]()(instances) == pytest.approx(value)
        assert s.latency()[name] == pytest.approx(value)


def test_read_instances_log(tmp_path):
    log = tmp_path / "instances.log"
    rows = [{"index": 0, "prediction": "a b", "delays": [320.0, 640.0], "elapsed": [400.0, 900.0],
             "prediction_length": 2, "reference": "a b c", "source": ["x.wav"], "source_length": 700.0}]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    [ins] = read_instances_log(log, direction="en-de")
    assert (ins.prediction, ins.delays, ins.elapsed, ins.source_length, ins.direction) == (
        "a b", [320.0, 640.0], [400.0, 900.0], 700.0, "en-de")
    assert read_instances_log(log, computation_aware=False)[0].elapsed is None
    log.write_text('{"index": 0}\n')
    with pytest.raises(ValueError, match="instances.log:1: not a SimulEval instance line"):
        read_instances_log(log)
