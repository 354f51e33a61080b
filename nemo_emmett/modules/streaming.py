"""Streaming speech perception: audio pushed chunk by chunk, the new speech embeddings out, with NeMo's
cache-aware stream step of the encoder (``ConformerEncoder.cache_aware_stream_step``).

What is exact: the embeddings ``push`` returns are those of the whole utterance computed at once
(``AudioPerception.forward``) for the same frames. Three pieces look ahead and are bounded here:
the STFT window (a feature frame is final once its window's last sample has arrived), the causal
subsampling (encoder frame ``j`` reads feature frames up to ``j * subsampling``) and the attention
context (a ``chunked_limited`` chunk is final once its last frame is). The features are not
normalised per utterance (``normalize: NA``, as NeMo's cache-aware streaming models), so they need
no statistics of audio still to come."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from nemo_emmett.modules.perception import AudioPerception, streaming_problems


def require_streaming(perception: AudioPerception | None, what: str) -> AudioPerception:
    """``perception`` if it streams, else an error saying that ``what`` needs it and which keys to set."""
    if perception is None:
        raise ValueError(f"{what} needs speech perception, and this model has none (no audio task)")
    problems = streaming_problems(perception)
    if problems:
        raise ValueError(f"{what} needs a streaming speech encoder (a prefix of the audio giving the prefix of "
                         f"the speech frames); set: {'; '.join(problems)}, e.g. model.perception.att_context_size="
                         "[16,1] model.perception.causal_convolutions=true, and train the model that way")
    return perception


def stream_chunks(samples: torch.Tensor, chunk_samples: int) -> Iterator[torch.Tensor]:
    """1-D ``samples`` in consecutive pieces of ``chunk_samples`` (the last one may be shorter)."""
    if chunk_samples <= 0:
        raise ValueError(f"chunk size: expected a positive number of samples, got {chunk_samples}")
    for start in range(0, samples.shape[-1], chunk_samples):
        yield samples[start:start + chunk_samples]


def final_features(n_samples: int, hop: int, n_fft: int) -> int:
    """Feature frames of ``n_samples`` that no later sample changes: frame ``k``'s (centred) STFT window
    ends at sample ``k * hop + n_fft // 2``."""
    return max(0, (n_samples - n_fft // 2) // hop + 1)


def stable_frames(perception: AudioPerception, n_samples: int) -> int:
    """Speech frames of a prefix of ``n_samples`` equal to those of any longer audio (for a streaming
    ``perception``): the frames of the complete attention chunks."""
    feat = perception.preprocessor.featurizer
    f = final_features(n_samples, feat.hop_length, feat.n_fft)
    pre = (f - 1) // perception.encoder.subsampling_factor + 1 if f > 0 else 0  # causal subsampling
    chunk = chunk_frames(perception)
    return pre // chunk * chunk


def chunk_frames(perception: AudioPerception) -> int:
    """Encoder frames that become final together: a chunk of ``chunked_limited`` attention (right + 1),
    one frame for a causal ('regular', right 0) context."""
    enc = perception.encoder
    left, right = enc.att_context_size
    if enc.att_context_style == "chunked_limited":
        return right + 1
    if right == 0:
        return 1
    raise ValueError(f"streaming: att_context_style 'regular' with right context {right} > 0 looks ahead "
                     "through every layer; use model.perception.att_context_style=chunked_limited "
                     "or att_context_size=[L,0]")


class StreamingPerception:
    """Speech embeddings of one utterance (B = 1) as its audio arrives; ``reset()`` for the next one."""

    def __init__(self, perception: AudioPerception, sample_rate: int):
        self.perception = require_streaming(perception, "streaming perception")
        rate = perception.preprocessor._sample_rate
        if sample_rate != rate:
            raise ValueError(f"streaming perception: audio at {sample_rate} Hz, but the model's preprocessor "
                             f"takes {rate} Hz (model.perception.sample_rate); resample it first")
        enc = perception.encoder
        self.frames_per_chunk = chunk_frames(perception)
        feat = perception.preprocessor.featurizer
        self.samples_per_frame = enc.subsampling_factor * feat.hop_length
        enc.setup_streaming_params()
        cfg = enc.streaming_cfg
        # NeMo's CacheAwareStreamingAudioBuffer: [first step, later steps], in feature frames
        self._chunk, self._shift, self._cache = cfg.chunk_size, cfg.shift_size, cfg.pre_encode_cache_size
        left = enc.att_context_size[0]
        layers = len(perception.adapter.layers.layers) if perception.adapter.layers is not None else 0
        # encoder frames the adapter must see before the new ones to compute them exactly: each layer
        # reaches `left` frames further back; None: all of them (unlimited left context)
        self._adapter_history = None if left < 0 else layers * left
        self.reset()

    def reset(self) -> None:
        enc = self.perception.encoder
        p = next(enc.parameters())
        self._audio = torch.zeros(0, dtype=torch.float32, device=p.device)  # (T_samples,)
        self._fed = 0  # feature frames handed to the encoder
        self._step = 0
        self._caches = enc.get_initial_cache_state(batch_size=1, dtype=p.dtype, device=p.device)
        self._history = None  # (1, T_hist, D_enc) encoder frames kept for the adapter
        self._finished = False

    def push(self, samples: torch.Tensor) -> torch.Tensor:
        """The next samples (1-D float) -> the embeddings (T_new, D_backbone) that became final."""
        if samples.dim() != 1:
            raise ValueError(f"streaming perception: push() takes 1-D samples of one utterance, got shape "
                             f"{tuple(samples.shape)}")
        if samples.numel() == 0:
            raise ValueError("streaming perception: push() got an empty chunk (0 samples)")
        if self._finished:
            raise ValueError("streaming perception: push() after finish(); call reset() for a new utterance")
        self._audio = torch.cat([self._audio, samples.to(self._audio)])
        feats = self._features()
        feat = self.perception.preprocessor.featurizer
        final = final_features(self._audio.numel(), feat.hop_length, feat.n_fft)
        out = []
        while True:
            first = self._step == 0
            need = self._chunk[0] if first else self._chunk[1]
            if final - self._fed < need:
                break
            out.append(self._encode(feats, self._fed + need, keep_all=False))
        return self._cat(out)

    def finish(self) -> torch.Tensor:
        """The embeddings of the remaining frames, computed with the utterance's end (T_rest, D_backbone)."""
        if self._finished:
            raise ValueError("streaming perception: finish() called twice; call reset() for a new utterance")
        self._finished = True
        feats = self._features()
        total = feats.shape[-1]
        if total <= self._fed:
            return self._cat([])
        return self._cat([self._encode(feats, total, keep_all=True)])

    def _features(self) -> torch.Tensor:
        audio = self._audio[None]  # (1, T_samples)
        lens = torch.tensor([audio.shape[1]], device=audio.device)
        with torch.no_grad():
            feats, feat_lens = self.perception.preprocessor(input_signal=audio, length=lens)  # (1, F, T_feat)
        return feats[:, :, :int(feat_lens[0])]

    def _encode(self, feats: torch.Tensor, end: int, keep_all: bool) -> torch.Tensor:
        enc = self.perception.encoder
        first = self._step == 0
        cache = self._cache[0] if first else self._cache[1]
        start = max(0, self._fed - cache)
        chunk = feats[:, :, start:end]  # (1, F, cache + new)
        if chunk.shape[-1] < cache + (end - self._fed) and not first:  # NeMo pads a short pre-encode cache
            chunk = torch.nn.functional.pad(chunk, (cache + end - self._fed - chunk.shape[-1], 0))
        lens = torch.tensor([chunk.shape[-1]], device=chunk.device)
        with torch.no_grad():
            encoded, enc_lens, *caches = enc.cache_aware_stream_step(
                processed_signal=chunk, processed_signal_length=lens,
                cache_last_channel=self._caches[0], cache_last_time=self._caches[1],
                cache_last_channel_len=self._caches[2], keep_all_outputs=keep_all,
                drop_extra_pre_encoded=0 if first else enc.streaming_cfg.drop_extra_pre_encoded)
            self._caches = caches
            new = encoded[:, :, :int(enc_lens[0])].transpose(1, 2)  # (1, T_new, D_enc)
            emb = self._adapt(new)
        self._fed = end
        self._step += 1
        return emb

    def _adapt(self, new: torch.Tensor) -> torch.Tensor:
        # the adapter over the kept history and the new frames; the history starts on a chunk boundary
        window = new if self._history is None else torch.cat([self._history, new], dim=1)  # (1, T_w, D_enc)
        lens = torch.tensor([window.shape[1]], device=window.device)
        emb = self.perception.adapter(window, lens)[0, window.shape[1] - new.shape[1]:]  # (T_new, D_backbone)
        keep = self._adapter_history
        self._history = window if keep is None else (window[:, max(0, window.shape[1] - keep):] if keep else None)
        return emb

    def _cat(self, parts: list[torch.Tensor]) -> torch.Tensor:
        if parts:
            return torch.cat(parts)
        d = self.perception.adapter.proj.out_features
        return torch.zeros(0, d, device=self._audio.device)
