"""State dicts as safetensors files, tied tensors written once and read back under every name.

safetensors refuses tensors that share memory, which tied weights do (T5's ``shared.weight`` is also
``encoder.embed_tokens.weight``, ``decoder.embed_tokens.weight`` and often ``lm_head.weight``). Like
``safetensors.torch.save_model``, each group of identical views is written once under its first name;
unlike it, the other names go into the file's metadata (``"aliases"``: ``{alias: written name}``), so a
plain state dict, not only a module, comes back whole. Views that only overlap are written as copies."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path

import torch

ALIASES = "aliases"
"""The metadata key of ``{alias: written name}``."""


def _view_key(t: torch.Tensor) -> tuple:
    return t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype, t.device


def shared_aliases(state: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """``{name: the first earlier name of the same view}`` for every entry that is an identical view
    (storage, offset, shape, stride, dtype) of an earlier one; the others are not listed."""
    first: dict[tuple, str] = {}
    aliases = {}
    for name, t in state.items():
        if t.numel() == 0:  # empty tensors may share a null pointer without sharing anything
            continue
        key = _view_key(t)
        if key in first:
            aliases[name] = first[key]
        else:
            first[key] = name
    return aliases


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tensors whose storage another one still uses (overlapping, not identical, views) copied."""
    seen: set[int] = set()
    out = {}
    for name, t in tensors.items():
        ptr = t.untyped_storage().data_ptr()
        out[name] = t.clone() if (t.numel() and ptr in seen) else t
        if t.numel():
            seen.add(ptr)
    return out


def save_state(state: Mapping[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """``state`` (on CPU, contiguous) as a safetensors file at ``path``, each shared view once."""
    from safetensors.torch import save_file

    aliases = shared_aliases(state)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items() if k not in aliases}
    meta = {"format": "pt", **(metadata or {})}
    if aliases:
        meta[ALIASES] = json.dumps(aliases)
    save_file(_unshared(tensors), str(path), metadata=meta)


def header_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of safetensors bytes (the format: 8-byte little-endian header length, JSON header)."""
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]).get("__metadata__") or {}


def load_state(source: str | Path | bytes) -> dict[str, torch.Tensor]:
    """A file written by :func:`save_state` (a path, or its bytes), every alias back under its name.
    Any safetensors file reads (without aliases); anything else raises safetensors' error."""
    if isinstance(source, bytes):
        from safetensors.torch import load

        state, meta = load(source), header_metadata(source)
    else:
        from safetensors import safe_open

        with safe_open(str(source), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    for alias, name in json.loads(meta.get(ALIASES, "{}")).items():
        state[alias] = state[name]
    return state
