"""The SimulEval agent, driven by SimulEval 1.1.4's own evaluator over tiny wav files, with a fake session."""

from __future__ import annotations

import csv
import subprocess
import sys
import textwrap
import time
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

pytest.importorskip("simuleval", reason="SimulEval is a test-only extra (bash scripts/setup.sh --test installs it)")
from simuleval.data.segments import EmptySegment, SpeechSegment  # noqa: E402
from simuleval.evaluator.instance import LogInstance  # noqa: E402
from simuleval.evaluator.scorers.latency_scorer import LATENCY_SCORERS_DICT  # noqa: E402

from nemo_emmett.simul import agent as agent_module  # noqa: E402
from nemo_emmett.simul.latency import read_instances_log, score_directions  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
RATE = 16000
WORDS = ["das", "ist", "ein", "test"]


class FakeSession:
    """Wait-k over pushes: after the k-th push one word per push, the rest on ``final``; done after
    the last word (EOS). Records every push as (samples, final), per sentence in ``history``; each
    push takes ``compute_s`` of wall time, which the computation-aware latencies must see."""

    def __init__(self, k: int, compute_s: float = 0.0):
        self.k, self.compute_s, self.pushes, self.written, self.history = k, compute_s, [], 0, []

    def reset(self) -> None:
        if self.pushes:
            self.history.append(self.pushes)
        self.pushes, self.written = [], 0

    def push(self, samples: torch.Tensor, final: bool = False) -> list[str]:
        assert samples.dtype == torch.float32 and samples.dim() == 1
        assert not self.done, "pushed after the hypothesis was finished"
        self.pushes.append((samples.numel(), final))
        time.sleep(self.compute_s)
        end = len(WORDS) if final else min(len(WORDS), self.written + (len(self.pushes) >= self.k))
        out, self.written = WORDS[self.written:end], end
        return out

    @property
    def done(self) -> bool:
        return self.written == len(WORDS)


@pytest.fixture
def sessions(monkeypatch):
    """The agent's factory replaced: each agent gets a FakeSession (kept here) and a 16 kHz model."""
    made = []

    def make(args):
        made.append(FakeSession(args.k, compute_s=0.02))
        return made[-1], RATE

    monkeypatch.setattr(agent_module, "make_session", make)
    return made


@pytest.fixture
def corpus(tmp_path):
    """Three wavs: 1000 ms, 1280 ms (4 whole chunks: the final push is empty), 2240 ms (the session
    finishes before the source does); references; source and target lists as SimulEval reads them."""
    rng = np.random.default_rng(0)
    paths = []
    for i, ms in enumerate([1000, 1280, 2240]):
        path = tmp_path / f"utt{i}.wav"
        sf.write(path, 0.1 * rng.standard_normal(ms * RATE // 1000).astype("float32"), RATE)
        paths.append(path)
    (tmp_path / "src.txt").write_text("".join(f"{p}\n" for p in paths))
    (tmp_path / "tgt.txt").write_text("das ist ein test\ndas ist ein test\ndas ist kein test\n")
    return tmp_path


def run_simuleval(corpus: Path, monkeypatch, **extra) -> Path:
    """SimulEval's python entry (``simuleval.cli.evaluate``) with the agent, as the CLI would run it."""
    import simuleval.cli
    from simuleval.utils.agent import EVALUATION_SYSTEM_LIST

    monkeypatch.setattr(sys, "argv", ["simuleval"])  # SimulEval parses sys.argv too
    saved = list(EVALUATION_SYSTEM_LIST)
    out = corpus / "out"
    config = {"agent_class": "nemo_emmett.simul.agent.EmmettSimulAgent", "model": "fake.emmett",
              "source": corpus / "src.txt", "target": corpus / "tgt.txt", "output": out,
              "source_segment_size": 320, "chunk_ms": 320, "k": 2, "latency_metrics": "LAAL AL AP DAL",
              "no_progress_bar": True, **extra}
    try:
        simuleval.cli.evaluate(agent_module.EmmettSimulAgent, config)
    finally:
        EVALUATION_SYSTEM_LIST[:] = saved
    return out


def test_simuleval_evaluator_end_to_end(corpus, sessions, monkeypatch):
    out = run_simuleval(corpus, monkeypatch, computation_aware=True)
    [session] = sessions
    instances = read_instances_log(out / "instances.log", direction="en-de")
    assert [i.prediction for i in instances] == ["das ist ein test"] * 3
    # Segments of 320 ms; wait-2 writes from the 2nd chunk, the final segment flushes the rest.
    assert [i.delays for i in instances] == [[640, 960, 1000, 1000], [640, 960, 1280, 1280], [640, 960, 1280, 1600]]
    assert [i.source_length for i in instances] == [1000, 1280, 2240]
    # Whole chunks of 5120 samples, the rest with final; after EOS (sentence 3) nothing more is pushed.
    assert session.history == [[(5120, False)] * 3 + [(640, True)], [(5120, False)] * 4 + [(0, True)],
                               [(5120, False)] * 5]
    # Our scores of the logged sentences equal SimulEval's (scores.tsv rounds to 3 decimals). Under
    # --computation-aware SimulEval 1.1.4 makes the plain columns computation-aware too (its scorers'
    # from_args reads the flag), so both equal our _CA; the plain ones come from its scorers on the log.
    with open(out / "scores.tsv") as f:
        theirs = {k: float(v) for k, v in next(csv.DictReader(f, delimiter="\t")).items()}
    ours = score_directions(instances)["en-de"]
    assert sorted(theirs) == sorted(["BLEU", "LAAL", "LAAL_CA", "AL", "AL_CA", "AP", "AP_CA", "DAL", "DAL_CA"])
    assert ours["BLEU"] == pytest.approx(theirs["BLEU"], abs=1e-3)
    logged = {i: LogInstance(line) for i, line in enumerate((out / "instances.log").read_text().splitlines())}
    for name in ("LAAL", "AL", "AP", "DAL"):
        assert ours[f"{name}_CA"] == pytest.approx(theirs[f"{name}_CA"], abs=1e-3), name
        assert ours[f"{name}_CA"] == pytest.approx(theirs[name], abs=1e-3), name
        assert ours[name] == pytest.approx(LATENCY_SCORERS_DICT[name]()(logged), rel=1e-12), name
    # Each push took 20 ms: the computation-aware delays carry that wall time on top of the source read.
    assert all(e >= d + 20 for i in instances for e, d in zip(i.elapsed, i.delays))
    assert ours["LAAL_CA"] > ours["LAAL"] + 20


def test_pushes_whole_chunks_and_an_empty_final_one(sessions):
    """Segments smaller than a chunk are buffered; a source that ends on a chunk boundary gets an
    empty final push; an empty segment that does not end the source pushes nothing."""
    agent = agent_module.EmmettSimulAgent(Namespace(model="m", policy="wait-k", k=2, chunk_ms=320, source_lang="en",
                                                    target_lang="de", task="st"))
    session = sessions[-1]
    seg = lambda n, finished=False: SpeechSegment(content=[0.0] * n, sample_rate=RATE, finished=finished)  # noqa: E731
    assert agent.pushpop(seg(3000)).is_empty  # less than one chunk (5120 samples): read on
    assert agent.pushpop(seg(0)).is_empty and session.pushes == []  # an empty chunk
    assert agent.pushpop(seg(7240)).content == "das"  # 10240 samples: two chunks
    out = agent.pushpop(seg(5120, finished=True))
    assert (out.content, out.finished) == ("ist ein test", True)
    assert session.pushes == [(5120, False), (5120, False), (5120, False), (0, True)]
    agent.reset()
    assert session.pushes == [] and agent.pushed == 0
    assert agent.pushpop(EmptySegment(finished=True)).finished  # an empty source
    assert session.pushes == [(0, True)]


def test_wrong_sample_rate_and_channels(sessions):
    agent = agent_module.EmmettSimulAgent(Namespace(model="m", policy="wait-k", k=3, chunk_ms=320, source_lang="en",
                                                    target_lang="de", task="st"))
    with pytest.raises(ValueError, match="sampled at 8000 Hz but the model's perception takes 16000 Hz"):
        agent.pushpop(SpeechSegment(content=[0.0] * 8000, sample_rate=8000))
    agent.reset()
    with pytest.raises(ValueError, match="2 channels; the agent takes mono"):
        agent.pushpop(SpeechSegment(content=[[0.0, 0.0]] * 6000, sample_rate=RATE))


def test_non_positive_k_and_chunk_are_refused(corpus, sessions, monkeypatch, capsys):
    with pytest.raises(ValueError, match="--k must be a positive integer, got 0"):
        agent_module.EmmettSimulAgent(Namespace(model="m", policy="wait-k", k=0, chunk_ms=320))
    with pytest.raises(ValueError, match="--chunk-ms must be a positive integer, got -5"):
        agent_module.EmmettSimulAgent(Namespace(model="m", policy="wait-k", k=1, chunk_ms=-5))
    with pytest.raises(SystemExit):  # SimulEval's argument parsing, before any model is loaded
        run_simuleval(corpus, monkeypatch, k=0)
    assert "--k must be a positive integer, got '0'" in capsys.readouterr().err
    assert sessions == []


def test_simuleval_command_line(corpus):
    """The console command as documented, with the agent's factory swapped for the fake in a small
    agent file (``--agent`` imports it; ``--agent-class`` names the agent it registers)."""
    fake = corpus / "fake_agent.py"
    fake.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_agent import FakeSession
        from nemo_emmett.simul import agent
        agent.make_session = lambda args: (FakeSession(args.k), {RATE})
    """))
    out = corpus / "cli_out"
    cmd = [sys.executable, "-m", "simuleval.cli", "--agent", str(fake),
           "--agent-class", "nemo_emmett.simul.agent.EmmettSimulAgent", "--model", "fake.emmett",
           "--source", str(corpus / "src.txt"), "--target", str(corpus / "tgt.txt"), "--output", str(out),
           "--source-segment-size", "320", "--policy", "wait-k", "--k", "3", "--chunk-ms", "320",
           "--source-lang", "en", "--target-lang", "de", "--latency-metrics", "LAAL", "AL", "--no-progress-bar"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    [first, *_] = read_instances_log(out / "instances.log")
    assert first.delays == [960, 1000, 1000, 1000]  # wait-3
    assert (out / "scores.tsv").read_text().splitlines()[0].split("\t") == ["BLEU", "LAAL", "AL"]
