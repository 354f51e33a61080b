"""What a saved model needs to be rebuilt anywhere: its self-contained config, tokenizer files and class.

Shared by the two saved formats, the ``.emmett`` export (``export.py``) and the Hugging Face-style
folder and its archive (``models/pretrained.py``, ``models/archive.py``). The model is typed loosely
(``nn.Module`` with the attributes used): ``models/base.py`` imports this module, not the other way."""

from __future__ import annotations

import dataclasses
import importlib
import logging
import shutil
import tarfile
from pathlib import Path, PurePosixPath
from typing import Any

from torch import nn

from nemo_emmett.modules.perception import module_configs

log = logging.getLogger(__name__)

TOKENIZER_DIR = "tokenizer"
SPM_FILE = "tokenizer.model"
NOT_EXPORTED = ("_name_or_path", "transformers_version")
"""Backbone config entries that are provenance and would point at the original folder."""
MOVED_CLASSES = {
    "nemo_emmett.models.modular.ModularTranslation": "nemo_emmett.mammoth.modular.ModularTranslation",
    "nemo_emmett.models.modular_salm.ModularSalmT5": "nemo_emmett.mammoth.modular_salm.ModularSalmT5",
}
"""Model classes that moved when the package was laid out by idea (0.2.0): checkpoints and exports
written before name the old path, which is read as the new one (with a log line saying so)."""


def class_path(model: nn.Module) -> str:
    return f"{type(model).__module__}.{type(model).__qualname__}"


def model_sampling_rate(model: nn.Module) -> int:
    """The sampling rate the model's preprocessor expects (a NeMo ASR encoder brings its own)."""
    if model.perception is None:  # a text-only model
        return int(model.cfg.perception.sample_rate)
    rate = module_configs(model.perception)["preprocessor"].get("sample_rate")
    return int(rate) if rate is not None else int(model.cfg.perception.sample_rate)


def self_contained_config(model: nn.Module, tokenizer_path: str) -> dict[str, Any]:
    """The model's config with every external path replaced by what the saved model holds: every
    default filled in, the tokenizer at ``tokenizer_path`` (relative to the saved model),
    ``backbone.pretrained_path: null`` with ``backbone.config`` the loaded backbone's full Hugging Face
    config (``model_type`` kept), ``perception.pretrained_asr: null`` with the preprocessor and encoder
    as NeMo ``_target_`` configs."""
    cfg = dataclasses.asdict(model.cfg)
    spm = model.text.spm_path is not None
    cfg["tokenizer"]["spm_path"] = tokenizer_path if spm else None
    cfg["tokenizer"]["hf_path"] = None if spm else tokenizer_path
    if hasattr(model.backbone, "config"):  # a Hugging Face backbone (modular models build their own stacks)
        hf = model.backbone.config.to_dict()  # the config's own vocab size and special ids win on restore
        for key in NOT_EXPORTED:
            hf.pop(key, None)
        cfg["backbone"] = {**cfg["backbone"], "pretrained_path": None, "config": hf}
    if model.perception is not None:
        cfg["perception"] = {**cfg["perception"], "pretrained_asr": None, **module_configs(model.perception)}
    return cfg


def write_tokenizer(model: nn.Module, root: Path) -> tuple[str, str]:
    """The model's tokenizer under ``root/tokenizer/``: ``tokenizer.model`` (SentencePiece) or the Hugging
    Face tokenizer files. Returns ``(kind, path relative to root)``: ``("spm", "tokenizer/tokenizer.model")``
    or ``("hf", "tokenizer")``."""
    folder = root / TOKENIZER_DIR
    folder.mkdir(parents=True, exist_ok=True)
    if model.text.spm_path is not None:
        shutil.copyfile(model.text.spm_path, folder / SPM_FILE)
        return "spm", f"{TOKENIZER_DIR}/{SPM_FILE}"
    model.text.tok.save_pretrained(str(folder))
    return "hf", TOKENIZER_DIR


def with_tokenizer(cfg: dict[str, Any], kind: str, path: str | Path) -> dict[str, Any]:
    """``cfg`` with its tokenizer at ``path`` (``kind`` ``spm`` or ``hf``), the other field cleared."""
    key = "spm_path" if kind == "spm" else "hf_path"
    return {**cfg, "tokenizer": {**cfg["tokenizer"], "spm_path": None, "hf_path": None, key: str(path)}}


def tokenizer_members(tar: tarfile.TarFile, source: Path | str) -> dict[str, bytes]:
    """{name relative to ``tokenizer/``: bytes} of an archive's tokenizer files (none: empty); a member
    name that would leave the folder is an error naming ``source``."""
    files = {}
    for m in tar.getmembers():
        p = PurePosixPath(m.name)
        if p.parts[:1] != (TOKENIZER_DIR,) or not m.isfile():
            continue
        if p.is_absolute() or ".." in p.parts:
            raise ValueError(f"{str(source)!r}: unsafe member name {m.name!r}")
        files[str(p.relative_to(TOKENIZER_DIR))] = tar.extractfile(m).read()
    return files


def import_model_class(name: Any, source: Path | str, version: str | None, base: type) -> type:
    """The class at dotted ``name`` (a moved one read from its new place), which must be ``base`` or a
    subclass; errors name ``source`` (the file it was read from) and the version that wrote it."""
    written_by = f" (written by nemo_emmett {version})" if version else ""
    if not isinstance(name, str) or "." not in name:
        raise ValueError(f"{str(source)!r}: model class {name!r} is not a dotted 'module.Class' path")
    if name in MOVED_CLASSES:
        log.info("%r: model class %s%s moved to %s; loading it from there", str(source), name, written_by,
                 MOVED_CLASSES[name])
        name = MOVED_CLASSES[name]
    module_name, _, cls_name = name.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as e:
        raise ImportError(f"{str(source)!r}: model class {name!r}{written_by} cannot be imported: {e}") from e
    if not (isinstance(cls, type) and issubclass(cls, base)):
        what = "a nemo_emmett TranslationModel" if base.__name__ == "TranslationModel" else f"a {base.__name__}"
        raise TypeError(f"{str(source)!r}: {name!r} is not {what}")
    return cls
