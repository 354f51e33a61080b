"""Speech perception shared by every model family: features -> encoder -> modality adapter -> projection.

The encoder is a NeMo FastConformer built from config, or the encoder of a NeMo ASR model
restored from a local ``.nemo`` file (its own preprocessor comes with it)."""

from __future__ import annotations

import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn


@dataclass
class PerceptionConfig:
    pretrained_asr: str | None = None
    """Local .nemo of a NeMo ASR model; its preprocessor and encoder (weights included) replace the
    ones built here."""
    preprocessor: dict[str, Any] | None = None
    """A NeMo module config with ``_target_`` (e.g. from an ASR model's ``cfg.preprocessor``);
    null: ``AudioToMelSpectrogramPreprocessor`` with the fields below. Exports record it."""
    encoder: dict[str, Any] | None = None
    """Likewise for the encoder (random init); null: a FastConformer with the fields below."""
    sample_rate: int = 16000
    features: int = 80
    n_layers: int = 2
    d_model: int = 128
    n_heads: int = 4
    ff_expansion_factor: int = 2
    conv_kernel_size: int = 9
    subsampling_factor: int = 8
    """8x subsampling of 10 ms frames: one encoder frame per 80 ms (data.token_equivalent_duration)."""
    subsampling_conv_channels: int = 64
    adapter_layers: int = 1
    """Transformer layers of the modality adapter between the speech encoder and the backbone."""
    dropout: float = 0.1
    ctc_weight: float = 0.3
    """Weight of an auxiliary CTC loss of the speech encoder on the source transcript (0: off).
    Trained from scratch, the encoder otherwise collapses to a constant the decoder ignores."""
    gradient_checkpointing: bool = False
    """Recompute each speech encoder layer's activations in the backward pass (less memory, more
    compute); NeMo's ConformerEncoder has no switch of its own, see :func:`checkpoint_layers`."""
    att_context_size: list[int] | None = None
    """[left, right] attention context of the encoder (and of the modality adapter) in encoder frames;
    null: full context. E.g. [16, 1] with ``att_context_style: chunked_limited``: chunks of 2 frames,
    each seeing 16 frames to its left (NeMo's cache-aware streaming FastConformer)."""
    att_context_style: str = "chunked_limited"
    """NeMo's ``att_context_style``: 'chunked_limited' (chunks of right + 1 frames; what NeMo's
    cache-aware streaming models use) or 'regular' (a sliding window)."""
    causal_convolutions: bool = False
    """Causal depthwise convolutions (``conv_context_size: causal``) and causal subsampling
    (``causal_downsampling``): with a finite right context, a prefix of the audio then gives the
    prefix of the encoder frames (:attr:`AudioPerception.is_streaming`)."""
    normalize: str | None = None
    """The preprocessor's feature normalisation; null: NeMo's 'per_feature' (statistics of the whole
    utterance), or 'NA' (none) when the encoder streams (``att_context_size`` with
    ``causal_convolutions``), as NeMo's cache-aware streaming models do: per-utterance statistics
    would need audio not received yet."""


def context_mask(t: int, att_context_size: list[int], style: str, device: torch.device | None = None) -> torch.Tensor:
    """(T, T) bool, True where frame i may attend to frame j: NeMo ConformerEncoder's attention mask
    for ``att_context_size`` [left, right] (-1: unlimited) and ``style`` ('regular' or 'chunked_limited')."""
    left, right = att_context_size
    i = torch.arange(t, device=device)[:, None]  # (T, 1)
    j = torch.arange(t, device=device)[None, :]  # (1, T)
    if style == "regular" or right < 0:
        allowed = torch.ones(t, t, dtype=torch.bool, device=device)
        if left >= 0:
            allowed &= j >= i - left
        if style == "regular" and right >= 0:
            allowed &= j <= i + right
        return allowed
    if style != "chunked_limited":
        raise ValueError(f"perception.att_context_style: {style!r} is not supported; expected 'regular' or 'chunked_limited'")
    chunk = right + 1
    diff = i // chunk - j // chunk  # (T, T) chunks between query and key
    left_chunks = left // chunk if left >= 0 else t
    return (diff >= 0) & (diff <= left_chunks)


class ModalityAdapter(nn.Module):
    """A few transformer layers over encoder frames, then a projection to the backbone width. With
    ``att_context_size`` each frame sees only the encoder's attention context (no look-ahead beyond it)."""

    def __init__(self, *, d_in: int, d_out: int, num_layers: int, n_heads: int, dropout: float,
                 att_context_size: list[int] | None = None, att_context_style: str = "chunked_limited"):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_in, n_heads, 2 * d_in, dropout, batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False) if num_layers else None
        self.proj = nn.Linear(d_in, d_out)
        self.n_heads = n_heads
        self.att_context_size = list(att_context_size) if att_context_size is not None else None
        self.att_context_style = att_context_style

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        # x: (B, T, D_in) -> (B, T, D_out)
        if self.layers is not None:
            pad = torch.arange(x.shape[1], device=x.device)[None, :] >= lens[:, None]  # (B, T)
            if self.att_context_size is None:
                x = self.layers(x, src_key_padding_mask=pad)
            else:
                t = x.shape[1]
                allowed = context_mask(t, self.att_context_size, self.att_context_style, x.device)  # (T, T)
                allowed = allowed[None] & ~pad[:, None, :]  # (B, T, T)
                allowed |= torch.eye(t, dtype=torch.bool, device=x.device)  # a padded frame sees itself, no NaN
                mask = (~allowed).repeat_interleave(self.n_heads, dim=0)  # (B * H, T, T), True: masked
                x = self.layers(x, mask=mask)
        return self.proj(x)


@dataclass
class PerceptionOutput:
    embeddings: torch.Tensor
    """(B, T, D_backbone) speech embeddings for the backbone."""
    lengths: torch.Tensor
    """(B,) valid frames of ``embeddings`` (and of ``encoded``)."""
    encoded: torch.Tensor
    """(B, T, D_enc) speech encoder output, before the adapter."""


class AudioPerception(nn.Module):
    def __init__(self, *, preprocessor: nn.Module, encoder: nn.Module, adapter: ModalityAdapter,
                 ctc_head: nn.Linear | None = None):
        super().__init__()
        self.preprocessor = preprocessor
        self.encoder = encoder
        self.adapter = adapter
        self.ctc_head = ctc_head  # (D_enc -> vocab + 1), the last class is the CTC blank

    def forward(self, audio: torch.Tensor, audio_lens: torch.Tensor) -> PerceptionOutput:
        """audio: (B, T_samples), audio_lens: (B,)."""
        feats, feat_lens = self.preprocessor(input_signal=audio, length=audio_lens)  # (B, F, T_feat)
        enc, enc_lens = self.encoder(audio_signal=feats, length=feat_lens)  # (B, D_enc, T)
        enc = enc.transpose(1, 2)  # (B, T, D_enc)
        return PerceptionOutput(self.adapter(enc, enc_lens), enc_lens, enc)

    @property
    def is_streaming(self) -> bool:
        """Whether a prefix of the audio gives the prefix of the speech embeddings (up to the frames
        :func:`modules.streaming.stable_frames` counts): the encoder has a finite right context,
        causal convolutions and subsampling, the features no per-utterance normalisation, and the
        adapter the encoder's context."""
        return not streaming_problems(self)

    def ctc_loss(self, out: PerceptionOutput, ids: torch.Tensor, lens: torch.Tensor,
                 reduction: str = "mean") -> torch.Tensor:
        """CTC loss of the encoder output against token ids (B, U) with lengths (B,): ``mean`` over
        the batch of each example's loss divided by its target length, or those (B,) per-example
        values (``reduction="none"``; their mean is the ``mean``)."""
        if reduction not in ("mean", "none"):
            raise ValueError(f"ctc_loss reduction must be 'mean' or 'none', got {reduction!r}")
        log_probs = self.ctc_head(out.encoded).float().log_softmax(-1).transpose(0, 1)  # (T, B, V + 1)
        blank = self.ctc_head.out_features - 1
        if reduction == "mean":
            return F.ctc_loss(log_probs, ids, out.lengths.long(), lens.long(), blank=blank, zero_infinity=True)
        losses = F.ctc_loss(log_probs, ids, out.lengths.long(), lens.long(), blank=blank, zero_infinity=True,
                            reduction="none")  # (B,)
        return losses / lens.clamp(min=1).to(losses.dtype)


def streaming_problems(perception: AudioPerception) -> list[str]:
    """What keeps ``perception`` from streaming, as config keys to set (empty: it streams)."""
    enc, problems = perception.encoder, []
    ctx = getattr(enc, "att_context_size", None)
    if ctx is None or len(ctx) != 2 or ctx[1] < 0:
        problems.append(f"model.perception.att_context_size=[L,R] with a finite right context R >= 0 (now {ctx})")
    conv = getattr(enc, "conv_context_size", None)
    pre = getattr(enc, "pre_encode", None)
    if conv is None or conv[1] != 0 or not getattr(pre, "is_causal", False):
        problems.append("model.perception.causal_convolutions=true (causal convolutions and subsampling)")
    norm = getattr(getattr(perception.preprocessor, "featurizer", None), "normalize", None)
    if norm in ("per_feature", "all_features"):
        problems.append(f"model.perception.normalize=NA (now {norm!r}: statistics of the whole utterance)")
    if perception.adapter.layers is not None and perception.adapter.att_context_size is None:
        problems.append("the modality adapter needs the encoder's att_context_size (build it with build_perception)")
    return problems


def is_streaming_config(cfg: PerceptionConfig) -> bool:
    return cfg.att_context_size is not None and cfg.causal_convolutions


def default_module_configs(cfg: PerceptionConfig) -> dict[str, dict[str, Any]]:
    """``_target_`` configs of the built-in preprocessor and FastConformer from the config fields."""
    preprocessor = {"_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
                    "sample_rate": cfg.sample_rate, "features": cfg.features}
    normalize = cfg.normalize or ("NA" if is_streaming_config(cfg) else None)
    if normalize is not None:
        preprocessor["normalize"] = normalize
    streaming: dict[str, Any] = {}
    if cfg.att_context_size is not None:
        if len(cfg.att_context_size) != 2:
            raise ValueError(f"perception.att_context_size: expected [left, right] encoder frames, "
                             f"got {cfg.att_context_size}")
        streaming |= {"att_context_size": list(cfg.att_context_size), "att_context_style": cfg.att_context_style}
    if cfg.causal_convolutions:
        streaming |= {"conv_context_size": "causal", "causal_downsampling": True}
    return {
        "preprocessor": preprocessor,
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConformerEncoder",
            "feat_in": cfg.features, "n_layers": cfg.n_layers, "d_model": cfg.d_model, "n_heads": cfg.n_heads,
            "ff_expansion_factor": cfg.ff_expansion_factor, "conv_kernel_size": cfg.conv_kernel_size,
            "subsampling": "dw_striding", "subsampling_factor": cfg.subsampling_factor,
            "subsampling_conv_channels": cfg.subsampling_conv_channels, "dropout": cfg.dropout,
            "dropout_pre_encoder": cfg.dropout, "dropout_emb": 0.0, "dropout_att": cfg.dropout,
            # No all_reduce inside forward: under DDP one rank may hold a text batch while another
            # holds audio, and a collective that only the audio ranks enter would hang the run.
            "sync_max_audio_length": False,
            **streaming,
        },
    }


class CheckpointedForward:
    """A layer's ``forward`` that, in training with gradients on, runs under non-reentrant
    ``torch.utils.checkpoint``: its activations are dropped and recomputed in the backward pass.
    An object rather than a closure so that the model still pickles (dataloader/DDP spawn)."""

    def __init__(self, layer: nn.Module):
        self.layer = layer

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        forward = type(self.layer).forward.__get__(self.layer)
        if self.layer.training and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)
        return forward(*args, **kwargs)


def checkpoint_layers(encoder: nn.Module) -> None:
    """Activation checkpointing of each layer of a NeMo speech encoder (``encoder.layers``, as
    ConformerEncoder holds them); parameter names and the state dict are unchanged. The recomputation
    replays dropout exactly; a BatchNorm's running statistics see each batch twice (same values,
    a faster moving average)."""
    layers = getattr(encoder, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"perception.gradient_checkpointing: {type(encoder).__name__} has no `layers` list "
                         "of encoder layers to checkpoint (set it to false)")
    for layer in layers:
        layer.forward = CheckpointedForward(layer)


def restore_asr(path: Path) -> Any:
    """NeMo's ``ASRModel.restore_from`` of a local file; a file that is not a ``.nemo`` archive (a tar,
    often gzipped, holding ``model_config.yaml`` and ``model_weights.ckpt``) is an error naming it,
    where NeMo's own would not say which file (``tarfile.ReadError: not a gzip file``)."""
    expected = ("expected a NeMo .nemo archive (a tar holding model_config.yaml and model_weights.ckpt, "
                "as ASRModel.save_to writes)")
    if not tarfile.is_tarfile(path):
        raise ValueError(f"perception.pretrained_asr: {str(path)!r} is not a .nemo archive; {expected}")
    from nemo.collections.asr.models import ASRModel

    try:
        return ASRModel.restore_from(str(path), map_location="cpu")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:  # truncated or damaged inside
        raise ValueError(f"perception.pretrained_asr: cannot restore {str(path)!r} ({type(e).__name__}: {e}); "
                         f"{expected}") from e


def build_perception(cfg: PerceptionConfig, output_dim: int, vocab_size: int) -> AudioPerception:
    from nemo.core.classes.common import Serialization

    if cfg.pretrained_asr is not None:
        path = Path(cfg.pretrained_asr)
        if not path.is_file():
            raise FileNotFoundError(f"perception.pretrained_asr: {str(path)!r} does not exist (give a local .nemo)")
        asr = restore_asr(path)
        preprocessor, encoder = asr.preprocessor, asr.encoder
        if hasattr(encoder, "sync_max_audio_length"):  # see default_module_configs: no collective in forward
            encoder.sync_max_audio_length = False
    else:
        defaults = default_module_configs(cfg)
        preprocessor = Serialization.from_config_dict(cfg.preprocessor or defaults["preprocessor"])
        encoder = Serialization.from_config_dict(cfg.encoder or defaults["encoder"])
    if cfg.gradient_checkpointing:
        checkpoint_layers(encoder)
    enc_ctx = getattr(encoder, "att_context_size", None)
    limited = enc_ctx is not None and list(enc_ctx) != [-1, -1]
    adapter = ModalityAdapter(d_in=encoder._feat_out, d_out=output_dim, num_layers=cfg.adapter_layers,
                              n_heads=cfg.n_heads, dropout=cfg.dropout,
                              att_context_size=list(enc_ctx) if limited else None,
                              att_context_style=getattr(encoder, "att_context_style", "regular"))
    ctc_head = nn.Linear(encoder._feat_out, vocab_size + 1) if cfg.ctc_weight > 0 else None
    return AudioPerception(preprocessor=preprocessor, encoder=encoder, adapter=adapter, ctc_head=ctc_head)


def module_configs(perception: AudioPerception) -> dict[str, dict[str, Any]]:
    """``_target_`` configs of the preprocessor and encoder, so that an export can rebuild them
    (with random weights, then loaded from the checkpoint) without the original ``.nemo``."""
    from omegaconf import OmegaConf

    out = {}
    for name in ("preprocessor", "encoder"):
        cfg = getattr(getattr(perception, name), "_cfg", None)
        if cfg is None:
            raise ValueError(f"perception.{name} ({type(getattr(perception, name)).__name__}) has no NeMo config to export")
        out[name] = OmegaConf.to_container(cfg, resolve=True)
    return out
