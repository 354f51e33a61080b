"""Typed model configuration: the one place where model defaults live (MGCM's: ``mgcm/config.py``).

Hydra composes ``cfg.model`` on top of these dataclasses (``nemo_emmett/config_store.py``), so a
YAML sets only what differs and an unknown key is an error; :func:`parse_model_config` turns the
composed node (or a checkpoint's plain dict) into the dataclass."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nemo_emmett.mgcm.config import MGCMConfig
from nemo_emmett.modules.cross_attention import CrossAttentionConfig
from nemo_emmett.modules.perception import PerceptionConfig


@dataclass
class TokenizerConfig:
    spm_path: str | None = None
    """SentencePiece model for from-scratch backbones; null: the one the data pipeline trained."""
    hf_path: str | None = None
    """Local Hugging Face tokenizer folder (pretrained backbones); null: the backbone's folder."""
    prompt_template: str | None = None
    """Prompt text; may use {task}, {source_lang}, {target_lang}. None: the tokenizer's default, the
    target-language tag ``<{target_lang}>``, or none for a language-code tokenizer (NLLB, mBART-50,
    M2M100), whose codes carry the direction (``parts/text_processor.py``)."""
    language_codes: dict[str, str] = field(default_factory=dict)
    """Language-code tokenizers (NLLB, mBART-50, M2M100): our language -> the backbone's code, e.g.
    ``{de: deu_Latn}``; an entry overrides the family default for ISO 639-1 names (NLLB ``deu_Latn``,
    mBART-50 ``de_DE``, M2M100 ``de``). An unknown language or a code not in the vocabulary is an error."""


@dataclass
class LoraConfig:
    """LoRA adapters by ``peft`` (``parts/lora.py``): their base layers freeze, nothing else does."""

    targets: list[str] | None = None
    """Regexes (full match) over dotted module names of the ``nn.Linear`` / GPT-2 ``Conv1D`` layers to
    adapt, e.g. ['backbone\\..*\\.(q|v)']; a pattern matching none warns, none matching at all is an error.
    null: peft's default layers for the backbone's ``model_type`` under ``backbone.`` (T5/mT5: q, v;
    GPT-2: c_attn; Llama/Qwen2: q_proj, v_proj); a family peft has no default for needs them given."""
    r: int = 8
    """Rank of the update."""
    alpha: float = 16.0
    """The update is scaled by alpha / r."""
    dropout: float = 0.0
    """Dropout on the adapters' input."""


@dataclass
class DecodingConfig:
    beam_size: int = 1
    """1: greedy. Both use the backbone's KV cache."""
    max_new_tokens: int = 48
    length_penalty: float = 1.0


@dataclass
class BackboneConfig:
    pretrained_path: str | None = None
    """Local folder written by ``save_pretrained`` (T5, mT5, Marian, NLLB ...); never downloaded."""
    config: dict[str, Any] = field(default_factory=dict)
    """Hugging Face config fields for a random-init backbone (``model_type`` selects the family)."""
    dtype: str | None = None
    """Weights of the backbone in float32 | bfloat16 | float16 (null: float32). Perception and the
    glue stay float32. Half precision suits a frozen or LoRA-only backbone (no float32 master
    weights); combine with trainer.precision=bf16-mixed for mixed-precision compute."""
    gradient_checkpointing: bool = False
    """Recompute the backbone's activations in the backward pass (less memory, ~30% more compute)."""


@dataclass
class ModelConfig:
    """Shared by every model family."""

    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    perception: PerceptionConfig = field(default_factory=PerceptionConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    finetune: str | None = None
    """Freezing preset, applied after LoRA and before ``freeze``: 'full' (every parameter trains, LoRA base
    weights included), 'backbone_frozen' (everything under ``backbone.`` frozen, its LoRA adapters too;
    perception, cross-attention and adapters train), 'lora' (the backbone frozen except its LoRA adapters,
    the rest trains; needs ``lora``). null: only ``freeze`` (and LoRA's frozen base weights)."""
    freeze: list[str] = field(default_factory=list)
    """Regexes (full match) over parameter names to freeze, e.g. ['backbone\\..*'], after ``finetune``."""
    lora: LoraConfig | None = None
    """LoRA adapters (null: none)."""
    optim: dict[str, Any] = field(default_factory=lambda: {
        "optimizer": {"_target_": "torch.optim.AdamW", "lr": 1e-3, "betas": [0.9, 0.98], "weight_decay": 0.01},
        # NeMo's InverseSquareRootAnnealing: the LR times u / (warmup_steps + 1) at update u up to its peak at update
        # 101, then times sqrt(101 / u). max_steps null: no end (NeMo's schedulers drop to min_lr after max_steps).
        "lr_scheduler": {"_target_": "nemo.core.optim.lr_scheduler.InverseSquareRootAnnealing", "warmup_steps": 100,
                         "max_steps": None},
    })
    """``_target_`` (or, for the scheduler, NeMo ``name``) blocks for ``parts/optim.py``. A block given is merged
    into this default when it names the same ``_target_`` (or none), and replaces it whole when it names another
    (:func:`merge_optim`)."""
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    label_smoothing: float = 0.0
    mgcm: MGCMConfig = field(default_factory=MGCMConfig)


@dataclass
class SimulConfig:
    """Prefix-to-prefix (wait-k) training of SALM-T5 for simultaneous translation (``simul/masks.py``):
    each target token sees only the speech the policy will have read when it writes that token. Text
    batches are unaffected. Needs ``audio_position: after_prompt`` and, to decode simultaneously, a
    streaming speech encoder."""

    enabled: bool = False
    k: int = 3
    """Wait-k lag in units of ``stride_frames``: target token i sees the speech of units < i + k (validation
    decodes with it; training too, without ``multi_path``)."""
    stride_frames: int = 4
    """Speech encoder frames per unit (4 frames of 80 ms: 320 ms); the T5 encoder is block-causal by units."""
    multi_path: bool = False
    """Multi-path wait-k (Elbayad et al., 2020): each training batch draws k uniformly from ``k_range``, a
    function of the global step and ``seed`` (the same on every rank and after a resume)."""
    k_range: list[int] = field(default_factory=lambda: [1, 9])
    """[lo, hi], inclusive: the k of multi-path training."""
    seed: int = 0
    """Seed of the multi-path draws."""


@dataclass
class SalmT5Config(ModelConfig):
    audio_position: str = "before_prompt"
    """Speech embeddings 'before_prompt' or 'after_prompt' in the encoder input ('after_prompt' with ``simul``)."""
    simul: SimulConfig = field(default_factory=SimulConfig)
    """Simultaneous (wait-k) training and decoding; off by default."""


def _identity(block: Mapping[str, Any]) -> tuple[Any, Any]:
    """What a block builds: its ``_target_``, or the ``name`` of a scheduler in NeMo's registry."""
    return block.get("_target_"), block.get("name")


def merge_optim(default: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """``model.optim``: each block of ``given`` merged into the same block of ``default`` while it keeps
    the default's ``_target_`` (or names none: ``{optimizer: {lr: 3e-3}}``), and replacing it whole when
    it names another one (a ``_target_``, or a scheduler ``name``) or is not a mapping (null, ``no_decay``
    lists): SGD must not inherit AdamW's betas. That is why the composed Hydra config holds only the blocks given (``config_store.py``): a
    dict merged there could no longer tell the keys given from the default's."""
    out = dict(default)
    for name, block in given.items():
        base = default.get(name)
        if isinstance(block, Mapping) and isinstance(base, Mapping) and (
                not ("_target_" in block or "name" in block) or _identity(block) == _identity(base)):
            out[name] = {**base, **block}
        else:
            out[name] = block
    return out


def parse_model_config(cfg: DictConfig | dict | ModelConfig, schema: type = SalmT5Config):
    """The composed ``cfg.model`` (or a checkpoint's plain ``hparams["cfg"]``) as ``schema``; errors name the key."""
    if isinstance(cfg, schema):
        return cfg
    if isinstance(cfg, DictConfig):  # resolve ${...} against the full config the node belongs to
        cfg = OmegaConf.to_container(cfg, resolve=True)
    cfg = dict(cfg)
    optim = cfg.pop("optim", None)
    merged = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.create(cfg)))
    if optim is not None:
        merged.optim = merge_optim(merged.optim, optim)
    return merged


@dataclass
class BestowGptConfig(ModelConfig):
    """BESTOW-GPT: the prompt's text embeddings cross-attend to speech, then a decoder-only LLM."""

    cross_attention: CrossAttentionConfig = field(default_factory=CrossAttentionConfig)
    freeze: list[str] = field(default_factory=lambda: [r"backbone\.(?!.*lora_).*"])
    """A pretrained LLM stays frozen (its LoRA adapters, when ``lora`` is set, train); [] trains it all."""
