"""Simultaneous decoding of one utterance: audio pushed chunk by chunk, target words out as they are written.

After each new unit of speech (``policy.stride`` encoder frames) the session re-encodes the speech
read so far (perception, then the backbone's encoder under the same masks as training: block-causal
with ``model.simul``), and the decoder writes greedy tokens while the policy says WRITE
(``decoder.py``). An end of sentence before the source has ended is not taken: the session reads on
(as fairseq's simultaneous agents do). A word is written once it is complete: once the next token
starts a new word (SentencePiece's ``▁``), or at the end. For each word the session records the
source it had received (``delays_ms``) and that plus the compute time spent so far (``elapsed_ms``,
SimulEval's computation-aware elapsed time).

    session = SimulSession(model, build_policy("wait-k", k=3, stride=4), source_lang="en",
                           target_lang="de", sample_rate=16000)
    for chunk in chunks:
        print(session.push(chunk, final=chunk is chunks[-1]))
"""

from __future__ import annotations

import time

import torch

from nemo_emmett.data.batch import TranslationBatch
from nemo_emmett.models.salm_t5 import SalmT5
from nemo_emmett.modules.streaming import require_streaming, stable_frames
from nemo_emmett.simul.decoder import PrefixDecoder
from nemo_emmett.simul.policies import Action, Policy


def frame_samples(perception: object) -> int:
    """Audio samples per speech encoder frame: the feature hop times the encoder's subsampling."""
    return int(perception.preprocessor.featurizer.hop_length) * int(perception.encoder.subsampling_factor)


class SimulSession:
    def __init__(self, model: SalmT5, policy: Policy, *, source_lang: str, target_lang: str, task: str = "st",
                 sample_rate: int):
        if not isinstance(model, SalmT5):
            raise TypeError(f"simultaneous decoding: {type(model).__name__} is not supported; it needs a SALM-T5 "
                            "(SalmT5, or ModularSalmT5 with adapters) trained with model.simul")
        perception = require_streaming(model.perception, "simultaneous decoding")
        rate = getattr(perception.preprocessor, "_sample_rate", model.cfg.perception.sample_rate)
        if sample_rate != rate:
            raise ValueError(f"simultaneous decoding: audio at {sample_rate} Hz, but the model's preprocessor takes "
                             f"{rate} Hz (model.perception.sample_rate); resample it first")
        s = model.cfg.simul
        if s.enabled and policy.stride % s.stride_frames:
            raise ValueError(f"policy stride {policy.stride} frames: expected a multiple of model.simul.stride_frames="
                             f"{s.stride_frames}, the blocks the model's encoder was trained on")
        self.model, self.policy, self.sample_rate = model.eval(), policy, sample_rate
        self.task, self.source_lang, self.target_lang = task, source_lang, target_lang
        self.scope = lambda: model.direction_scope(task, source_lang, target_lang)  # a modular model's components
        self.scope()  # built, not entered: a direction the model lacks fails here, naming the model's tasks
        self.frame_samples = frame_samples(perception)
        self.prompt = model.text.prompt_ids(task=task, source_lang=source_lang, target_lang=target_lang)
        self.start = [model.decoder_start_id, *model.text.target_prefix(target_lang)]
        self.eos_ids = model.eos_ids
        self.max_tokens = model.cfg.decoding.max_new_tokens
        self.reset()

    def reset(self) -> None:
        """Forget the utterance: the next push starts a new one."""
        self.audio = torch.zeros(0)
        self.read, self.finished, self._done, self.compute_s = 0, False, False, 0.0
        self.decoder = PrefixDecoder(self.model, self.start)
        self.policy.reset()
        self.words: list[str] = []
        self.delays_ms: list[float] = []
        """Per word: the source received when it was written (ms)."""
        self.elapsed_ms: list[float] = []
        """Per word: its delay plus the compute time spent on the utterance so far (ms)."""

    @property
    def done(self) -> bool:
        """Whether the utterance is translated (after the push with ``final=True``)."""
        return self._done

    @property
    def unit_samples(self) -> int:
        """Audio samples per unit of the policy."""
        return self.policy.stride * self.frame_samples

    def push(self, samples: torch.Tensor, final: bool = False) -> list[str]:
        """New source ``samples`` (1-D float; may be empty only with ``final``); returns the words written now."""
        start = time.perf_counter()
        if self._done:
            raise RuntimeError("SimulSession.push after the final chunk: call reset() for the next utterance")
        if not isinstance(samples, torch.Tensor):
            raise TypeError(f"samples: expected a 1-D float torch.Tensor, got {type(samples).__name__}")
        if samples.dim() != 1 or not samples.is_floating_point():
            raise ValueError(f"samples: expected a 1-D float tensor of audio samples, got shape {tuple(samples.shape)} "
                             f"and dtype {samples.dtype}")
        if samples.numel() == 0 and not final:
            raise ValueError("samples: an empty chunk (only the final push may be empty)")
        self.audio = torch.cat([self.audio, samples.detach().float().cpu()])
        if self.audio.numel() == 0:
            raise ValueError("samples: the utterance ended without any audio")
        with torch.no_grad(), self.scope():
            written = self._advance(final, start)
        self.compute_s += time.perf_counter() - start
        return written

    def stable_frames(self, n_samples: int) -> int:
        """Speech frames of the first ``n_samples`` that later audio does not change (``modules/streaming.py``)."""
        return stable_frames(self.model.perception, n_samples)

    def _advance(self, final: bool, start: float) -> list[str]:
        n = self.audio.numel()
        units = -(-n // self.unit_samples) if final else self.stable_frames(n) // self.policy.stride
        if units > self.read or final:
            self.read, self.finished = units, final
            self.decoder.set_source(self._encode())
            if self.policy.needs_hypothesis:
                self.policy.observe(self.decoder.hypothesis(self.max_tokens, self.eos_ids), final)
        out = []
        while self.policy.decide(self.read, self.finished, len(self.decoder.target)) == Action.WRITE:
            if len(self.decoder.written) >= self.max_tokens:
                break
            if self.policy.needs_hypothesis:
                token = self.policy.agreed[len(self.decoder.target)]
            else:
                token = self.decoder.predict()
                if token in self.eos_ids:
                    if not self.finished:  # not the end yet: read on, and predict this position again
                        self.decoder.withdraw()
                    break
            self.decoder.accept(token)
            out += self._emit(complete_only=True, start=start)
        if self.finished:
            self._done = True
            out += self._emit(complete_only=False, start=start)
        return out

    def _encode(self):
        """Encoder states of the speech read so far: whole units, or everything once the source has ended."""
        device, audio = self.model.device, self.audio
        batch = TranslationBatch(
            modality="audio", bucket=-1, ids=["simul"], tasks=[self.task], source_langs=[self.source_lang],
            target_langs=[self.target_lang], source_texts=[""], target_texts=[""],
            audio=audio[None].to(device), audio_lens=torch.tensor([audio.numel()], device=device),
            prompt_ids=torch.tensor([self.prompt], dtype=torch.long, device=device).view(1, len(self.prompt)),
            prompt_lens=torch.tensor([len(self.prompt)], device=device))
        frames = None if self.finished else self.read * self.policy.stride
        return self.model.simul_encode(batch, speech_frames=frames)

    def _emit(self, *, complete_only: bool, start: float) -> list[str]:
        """The words of the written tokens not yet emitted (all but the last, which may go on, unless at the end)."""
        words = self.model.text.decode(self.decoder.written).split()
        new = words[len(self.words): len(words) - 1 if complete_only else len(words)]
        delay = 1000.0 * self.audio.numel() / self.sample_rate
        compute_ms = 1000.0 * (self.compute_s + time.perf_counter() - start)
        self.words += new
        self.delays_ms += [delay] * len(new)
        self.elapsed_ms += [delay + compute_ms] * len(new)
        return new


def simul_translate(model: SalmT5, audio_list: list[torch.Tensor], policy: Policy, *, source_lang: str,
                    target_lang: str, task: str = "st", sample_rate: int,
                    chunk_samples: int | None = None) -> list[tuple[str, list[float], list[float]]]:
    """Each utterance decoded simultaneously, its audio pushed ``chunk_samples`` at a time (default: one
    unit of the policy): (hypothesis, delays_ms, elapsed_ms) per utterance, a delay and an elapsed time per word."""
    session = SimulSession(model, policy, source_lang=source_lang, target_lang=target_lang, task=task,
                           sample_rate=sample_rate)
    chunk = chunk_samples or session.unit_samples
    if chunk <= 0:
        raise ValueError(f"chunk_samples: expected a positive number of samples, got {chunk}")
    results = []
    for i, audio in enumerate(audio_list):
        if not isinstance(audio, torch.Tensor) or audio.dim() != 1 or audio.numel() == 0:
            raise ValueError(f"audio_list[{i}]: expected a non-empty 1-D float tensor, got "
                             f"{tuple(audio.shape) if isinstance(audio, torch.Tensor) else type(audio).__name__}")
        session.reset()
        pieces = list(audio.split(chunk))
        for j, piece in enumerate(pieces):
            session.push(piece, final=j == len(pieces) - 1)
        results.append((" ".join(session.words), list(session.delays_ms), list(session.elapsed_ms)))
    return results
