"""A SimulEval 1.1.4 speech-to-text agent that runs a nemo_emmett model through a simultaneous session.

The one module of the package that imports SimulEval (the optional extra: ``pip install -e ".[simul]"``)::

    simuleval --agent nemo_emmett/simul/agent.py --model model.emmett \\
        --source src.txt --target tgt.txt --source-segment-size 320 --output out/ \\
        --policy wait-k --k 3 --chunk-ms 320 --source-lang en --target-lang de

(or ``--agent-class nemo_emmett.simul.agent.EmmettSimulAgent`` instead of ``--agent``). ``src.txt``
lists one wav per line (mono, at the model's sampling rate), ``tgt.txt`` the reference
translations; ``out/`` receives ``instances.log``, ``scores.tsv`` and ``metrics.tsv``; add
``--computation-aware`` for the ``_CA`` latencies and ``--device cuda`` for a GPU.

How SimulEval drives it: for each sentence the evaluator sends ``--source-segment-size`` ms of
samples at a time, and calls :meth:`EmmettSimulAgent.policy` once per segment; every word it writes
then is stamped with the source read so far (its delay). The agent hands the session whole
``--chunk-ms`` chunks (any rest waits for the next segment) and the remainder with ``final=True``
when the source ends. SimulEval reads one answer per segment, so the words of several chunks go out
in one ``WriteAction``. The sentence is marked finished only once the source has been read, even
when the session finished earlier: the evaluator resets an agent that finishes early and feeds it
the rest of the source as a new sentence, whose words it would append.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from simuleval.agents import ReadAction, SpeechToTextAgent, WriteAction
from simuleval.agents.actions import Action
from simuleval.utils import entrypoint


def positive_int(flag: str):
    """An argparse ``type`` that accepts integers > 0, naming ``flag`` otherwise."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a positive integer, got {value!r}") from None
        if number <= 0:
            raise argparse.ArgumentTypeError(f"{flag} must be a positive integer, got {value!r}")
        return number

    return parse


def make_session(args: argparse.Namespace) -> tuple[Any, int]:
    """The model from ``--model`` (an export or a Lightning checkpoint), its policy and the
    :class:`~nemo_emmett.simul.session.SimulSession` over them; with the sampling rate the model's
    perception takes. Tests replace this factory with a fake session."""
    from nemo_emmett.export import load_model, model_sampling_rate
    from nemo_emmett.simul.policies import build_policy
    from nemo_emmett.simul.session import SimulSession

    model = load_model(args.model, map_location=getattr(args, "device", "cpu"))
    rate = model_sampling_rate(model)
    simul = getattr(model.cfg, "simul", None)
    kwargs = {"stride": simul.stride_frames} if simul is not None and simul.enabled else {}  # the trained blocks
    if args.policy == "wait-k":
        kwargs["k"] = args.k
    policy = build_policy(args.policy, **kwargs)
    session = SimulSession(model, policy, source_lang=args.source_lang, target_lang=args.target_lang,
                           task=args.task, sample_rate=rate)
    return session, rate


@entrypoint
class EmmettSimulAgent(SpeechToTextAgent):
    """Speech in, words out: SimulEval's segments -> fixed chunks -> ``session.push`` -> words."""

    def __init__(self, args: argparse.Namespace) -> None:
        for flag in ("k", "chunk_ms"):
            value = getattr(args, flag)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"--{flag.replace('_', '-')} must be a positive integer, got {value!r}")
        self.session, self.sample_rate = make_session(args)
        self.chunk_samples = max(1, round(args.chunk_ms * self.sample_rate / 1000))
        self.pushed = 0  # samples of states.source already handed to the session
        super().__init__(args)  # builds the states and calls reset()

    @staticmethod
    def add_args(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--model", required=True,
                            help="nemo_emmett model: a save_pretrained folder, a .nemo archive, an .emmett export or a Lightning .ckpt")
        parser.add_argument("--policy", default="wait-k", help="simultaneous policy (nemo_emmett.simul.policies)")
        parser.add_argument("--k", type=positive_int("--k"), default=3, help="wait-k: chunks read before writing")
        parser.add_argument("--chunk-ms", type=positive_int("--chunk-ms"), default=320,
                            help="ms of speech per chunk handed to the session")
        parser.add_argument("--source-lang", default="en", help="language spoken in the source audio")
        parser.add_argument("--target-lang", default="de", help="language to translate into")
        parser.add_argument("--task", default="st", help="model task (st: speech translation, asr)")

    def reset(self) -> None:
        super().reset()
        self.session.reset()
        self.pushed = 0

    def policy(self) -> Action:
        states = self.states
        if states.source_sample_rate and states.source_sample_rate != self.sample_rate:
            raise ValueError(f"the source audio is sampled at {states.source_sample_rate} Hz but the model's "
                             f"perception takes {self.sample_rate} Hz: resample the wav files listed in --source")
        words: list[str] = []
        while not self.session.done and len(states.source) - self.pushed >= self.chunk_samples:
            words += self.session.push(self._samples(self.pushed + self.chunk_samples))  # whole chunks first
        if states.source_finished and not self.session.done:
            words += self.session.push(self._samples(len(states.source)), final=True)
        if words or states.source_finished:
            return WriteAction(" ".join(words), finished=states.source_finished)
        return ReadAction()

    def _samples(self, end: int) -> torch.Tensor:
        """``states.source[pushed:end]`` as a 1-D float tensor, marked as pushed."""
        chunk = torch.tensor(self.states.source[self.pushed:end], dtype=torch.float32)  # (T,)
        if chunk.dim() != 1:
            raise ValueError(f"the source audio has {chunk.shape[-1]} channels; the agent takes mono wav files")
        self.pushed = end
        return chunk
