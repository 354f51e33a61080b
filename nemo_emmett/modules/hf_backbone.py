"""Hugging Face backbones from a local folder or from a config with random weights; never downloaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn


def load_hf_model(auto_cls: Any, *, pretrained_path: str | None, config: dict[str, Any],
                  overrides: dict[str, Any]) -> nn.Module:
    """``auto_cls``: ``AutoModelForSeq2SeqLM`` or ``AutoModelForCausalLM``.

    With ``pretrained_path``: weights and config from that folder (``save_pretrained`` layout).
    Otherwise ``config`` (with ``model_type``) plus ``overrides`` (vocab size, special ids)
    builds a randomly initialised model, for demos and tests."""
    from transformers import AutoConfig

    if pretrained_path is not None:
        path = Path(pretrained_path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"backbone.pretrained_path: {str(path)!r} is not a local Hugging Face model folder (no config.json); "
                "nothing is downloaded: save one with save_pretrained() and point here"
            )
        # from_pretrained returns the model in eval mode, and Lightning (>= 2.2) no longer calls train()
        # before fit: without this, a pretrained backbone would train with its dropout off.
        return auto_cls.from_pretrained(str(path), local_files_only=True).train()
    if "model_type" not in config:
        raise ValueError("backbone.config needs 'model_type' (e.g. t5, marian, m2m_100, gpt2, llama) "
                         "when backbone.pretrained_path is null")
    # Values written in the config win over the tokenizer's (a restored export keeps its vocab size).
    fields = {**overrides, **{k: v for k, v in config.items() if k != "model_type"}}
    hf_cfg = AutoConfig.for_model(config["model_type"], **fields)
    return auto_cls.from_config(hf_cfg)


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
