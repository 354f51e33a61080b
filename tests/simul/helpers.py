"""Helpers of the simul tests: tiny simultaneous SALM-T5 models and batches built by hand, and a frame-wise
stand-in for a streaming speech encoder (each 80 ms of audio is one frame on its own, so any prefix of
the audio gives exactly the prefix of the frames, as a streaming FastConformer's stable frames do)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from nemo_emmett.data.batch import TranslationBatch
from nemo_emmett.data.dataset import pad_ids
from nemo_emmett.modules.perception import PerceptionOutput

FRAME = 1280
"""Samples per frame: 80 ms at 16 kHz (a 10 ms hop, 8x subsampling)."""
TARGETS = ["one hundred and nine", "vier hundert neun", "two cent sixty"]


class FramewisePerception(nn.Module):
    """Audio (B, T) -> one embedding per 1280 samples, each from its own samples only."""

    is_streaming = True

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(FRAME, dim)
        self.ctc_head = None
        self.preprocessor = SimpleNamespace(featurizer=SimpleNamespace(hop_length=160), _sample_rate=16000)
        self.encoder = SimpleNamespace(subsampling_factor=8)

    def forward(self, audio: torch.Tensor, audio_lens: torch.Tensor) -> PerceptionOutput:
        B, T = audio.shape
        frames = -(-T // FRAME)
        x = nn.functional.pad(audio, (0, frames * FRAME - T)).view(B, frames, FRAME)  # (B, F, FRAME)
        lens = -(-audio_lens // FRAME)  # (B,)
        emb = self.proj(x)  # (B, F, D)
        return PerceptionOutput(emb, lens, emb)


def framewise_streaming(monkeypatch) -> None:
    """The session's streaming check and stable frames answer for the stand-in (each whole 80 ms is
    final; ``is_streaming`` says whether it streams); any other perception gets ``modules/streaming.py``'s."""
    from nemo_emmett.simul import session

    real_require, real_stable = session.require_streaming, session.stable_frames

    def require(perception, what):
        if isinstance(perception, FramewisePerception) and perception.is_streaming:
            return perception
        if isinstance(perception, FramewisePerception):
            raise ValueError(f"{what} needs a streaming speech encoder (stand-in): set "
                             "model.perception.att_context_size=[L,R] and model.perception.causal_convolutions=true")
        return real_require(perception, what)

    def stable(perception, n_samples):
        if isinstance(perception, FramewisePerception):
            return n_samples // FRAME
        return real_stable(perception, n_samples)

    monkeypatch.setattr(session, "require_streaming", require)
    monkeypatch.setattr(session, "stable_frames", stable)


def simul_cfg(tiny_cfg: dict, **simul) -> dict:
    return {**tiny_cfg, "audio_position": "after_prompt",
            "simul": {"enabled": True, "k": 2, "stride_frames": 2, **simul}}


def framewise(model):
    """The model with the frame-wise streaming stand-in as its perception."""
    torch.manual_seed(1)
    model.perception = FramewisePerception(model.backbone_dim)
    return model


def audio_batch(model, frames: list[int], targets: list[str] | None = None, seed: int = 0) -> TranslationBatch:
    """An ST batch (en -> de) of random audio, ``frames[b]`` frames of 80 ms each."""
    g = torch.Generator().manual_seed(seed)
    targets = targets or TARGETS[: len(frames)]
    n = len(frames)
    lens = torch.tensor([f * FRAME for f in frames])
    audio = torch.zeros(n, int(lens.max()))
    for b, length in enumerate(lens.tolist()):
        audio[b, :length] = 0.1 * torch.randn(length, generator=g)
    text = model.text
    transcript_ids, transcript_lens = pad_ids([text.encode("two hundred")] * n, text.pad_id)
    target_ids, target_lens = pad_ids([text.target_ids(t, target_lang="de") for t in targets], text.pad_id)
    prompt_ids, prompt_lens = pad_ids([text.prompt_ids(task="st", source_lang="en", target_lang="de")] * n,
                                      text.pad_id)
    return TranslationBatch(modality="audio", bucket=-1, ids=[f"a{i}" for i in range(n)], tasks=["st"] * n,
                            source_langs=["en"] * n, target_langs=["de"] * n, source_texts=[""] * n,
                            target_texts=list(targets), audio=audio, audio_lens=lens, target_ids=target_ids,
                            target_lens=target_lens, prompt_ids=prompt_ids, prompt_lens=prompt_lens,
                            transcript_ids=transcript_ids, transcript_lens=transcript_lens)


def train_steps(model, batch, steps: int) -> list[float]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss, _ = model.task_losses(batch)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return losses


@pytest.fixture(scope="module")
def framewise_streams():
    """Module-wide :func:`framewise_streaming` (use with ``pytest.mark.usefixtures`` or autouse)."""
    with pytest.MonkeyPatch.context() as mp:
        framewise_streaming(mp)
        yield
