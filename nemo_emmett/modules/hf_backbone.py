"""Hugging Face backbones from a local folder or from a config with random weights; never downloaded."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""``model.backbone.dtype`` names and the dtype the backbone's weights are loaded in."""


def backbone_dtype(name: str | None) -> torch.dtype:
    """``model.backbone.dtype`` as a torch dtype; null is float32 (not the folder's own dtype, which
    transformers would otherwise pick: a bf16-saved folder loads as float32 unless asked)."""
    if name is None:
        return torch.float32
    if name not in DTYPES:
        raise ValueError(f"model.backbone.dtype: {name!r} is not one of {sorted(DTYPES)} (or null: float32)")
    return DTYPES[name]


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Activation checkpointing of a Hugging Face backbone (``model.backbone.gradient_checkpointing``),
    non-reentrant: a frozen backbone fed trainable embeddings still passes gradients back. It only
    acts in training; in eval (decoding) the KV cache is used as without it."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ValueError(f"model.backbone.gradient_checkpointing: {type(model).__name__} does not support "
                         "gradient checkpointing (set it to false)")
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x; the old name is deprecated
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def warn_low_precision_training(model: nn.Module) -> None:
    """One warning when parameters in bf16/fp16 are trainable (``model.backbone.dtype`` with an
    unfrozen backbone, or adapters created in the backbone's dtype): the optimizer updates them
    without float32 master weights, so small updates round away."""
    low = [n for n, p in model.named_parameters() if p.requires_grad and p.dtype in (torch.bfloat16, torch.float16)]
    if low:
        log.warning("model.backbone.dtype: %d trainable parameter tensors are in half precision (e.g. %s); "
                    "without float32 master weights their updates are lost to rounding. Use a half-precision "
                    "backbone frozen or with LoRA adapters only (model.freeze), and trainer.precision=bf16-mixed "
                    "for mixed precision", len(low), low[0])


def load_hf_model(auto_cls: Any, *, pretrained_path: str | None, config: dict[str, Any],
                  overrides: dict[str, Any], dtype: str | None = None) -> nn.Module:
    """``auto_cls``: ``AutoModelForSeq2SeqLM`` or ``AutoModelForCausalLM``.

    With ``pretrained_path``: weights and config from that folder (``save_pretrained`` layout).
    Otherwise ``config`` (with ``model_type``) plus ``overrides`` (vocab size, special ids)
    builds a randomly initialised model, for demos and tests. ``dtype``: the weights' dtype
    (:func:`backbone_dtype`)."""
    from transformers import AutoConfig

    torch_dtype = backbone_dtype(dtype)
    if pretrained_path is not None:
        path = Path(pretrained_path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"backbone.pretrained_path: {str(path)!r} is not a local Hugging Face model folder (no config.json); "
                "nothing is downloaded: save one with save_pretrained() and point here"
            )
        # from_pretrained returns the model in eval mode, and Lightning (>= 2.2) no longer calls train()
        # before fit: without this, a pretrained backbone would train with its dropout off.
        return auto_cls.from_pretrained(str(path), local_files_only=True, dtype=torch_dtype).train()
    if "model_type" not in config:
        raise ValueError("backbone.config needs 'model_type' (e.g. t5, marian, m2m_100, gpt2, llama) "
                         "when backbone.pretrained_path is null")
    # Values written in the config win over the tokenizer's (a restored export keeps its vocab size).
    fields = {**overrides, **{k: v for k, v in config.items() if k != "model_type"}}
    hf_cfg = AutoConfig.for_model(config["model_type"], **fields)
    return auto_cls.from_config(hf_cfg).to(torch_dtype)


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
"""Any of these in a ``save_pretrained`` folder holds the weights."""


def check_local_folder(pretrained_path: str) -> None:
    """An error naming ``pretrained_path`` and what it lacks when it is not a complete local Hugging
    Face model folder (``config.json`` and weights); nothing is downloaded."""
    path = Path(pretrained_path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"backbone.pretrained_path: {str(path)!r} is not a local Hugging Face model folder (no config.json); "
            "nothing is downloaded: save one with save_pretrained() and point here"
        )
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        raise FileNotFoundError(f"backbone.pretrained_path: {str(path)!r} has a config.json but no weights (expected "
                                f"one of {list(WEIGHT_FILES)}, as save_pretrained() writes them)")


def check_vocab_fits(model: nn.Module, *, vocab_size: int, tokenizer: str, backbone: str) -> None:
    """An error naming both paths and sizes when the tokenizer can produce ids past the backbone's
    input embeddings. Fewer ids than rows is fine (T5's embeddings are padded to a multiple of 128)."""
    rows = model.get_input_embeddings().num_embeddings
    if vocab_size > rows:
        raise ValueError(f"tokenizer {tokenizer!r} has {vocab_size} ids but the backbone {backbone!r} has "
                         f"{rows} embedding rows: expected tokenizer vocab <= embedding rows (is it the "
                         "backbone's own tokenizer? model.tokenizer.hf_path / spm_path)")
