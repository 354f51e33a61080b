"""A trained model as ONE self-contained file, and loading it (or a Lightning checkpoint) back.

The newer format is the Hugging Face-style folder of ``TranslationModel.save_pretrained`` and its
one-file archive, ``save_to`` (``models/pretrained.py``, ``models/archive.py``); :func:`load_model`
reads every format, this one included.

Format (suffix ``.emmett`` by convention; any name works): an uncompressed tar, like NeMo's
``.nemo``, holding

* ``meta.json``: ``format`` (``"nemo_emmett.export"``), ``format_version``, ``model_class``
  (e.g. ``nemo_emmett.models.salm_t5.SalmT5``), ``nemo_emmett_version``, ``sampling_rate``,
  ``token_equivalent_duration`` (when given), ``tokenizer`` (``{"kind": "spm"|"hf", "path": ...}``).
* ``model_config.yaml``: the model config made self-contained: every default filled in, the
  tokenizer path relative to the archive (``tokenizer/...``), ``backbone.pretrained_path: null``
  with ``backbone.config`` the loaded backbone's full Hugging Face config (``model_type`` kept),
  ``perception.pretrained_asr: null`` with the preprocessor and encoder as NeMo ``_target_``
  configs. Restoring never needs the original folders, ``.nemo`` files or tokenizer.
* ``tokenizer/``: ``tokenizer.model`` (SentencePiece) or the Hugging Face tokenizer files.
* ``generation_config.json``: the backbone's generation defaults (e.g. Marian's ``bad_words_ids``),
  which a backbone rebuilt from its config alone would not have.
* ``model_weights.pt``: the state dict. LoRA adapters (``model.lora``) are not in it but in
  ``adapter/``, in PEFT's own format as peft writes it: ``adapter/adapter_config.json`` and
  ``adapter/adapter_model.safetensors``, keyed by the model's module names as
  ``peft.get_peft_model_state_dict`` gives them (the model is rebuilt with its adapters, which
  ``peft.set_peft_model_state_dict`` fills). Exports written before peft hold the adapters in
  ``model_weights.pt`` under the old names, mapped on restore (``parts/lora.py``).
  Modular models (``ModularTasks.components``) write each named component once instead, as
  ``components/<name>.pt`` (listed in ``meta.json`` under ``components``), and ``model_weights.pt``
  keeps the rest; ``restore_model(path, directions=[...])`` then builds and reads only the
  components of those tasks (``mammoth/component_files.py``).

:func:`restore_model` extracts only the tokenizer, into ``<cache>/exports/tok-<hash of its
bytes>`` (``$NEMO_EMMETT_CACHE``, default ``~/.cache/nemo_emmett``), where it stays readable for
as long as the model lives (and is shared by every export with the same tokenizer); the weights
are read straight from the archive.
"""

from __future__ import annotations

import json
import logging
import os
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from omegaconf import OmegaConf

from nemo_emmett.mammoth.component_files import component_member, restrict_tasks, split_state
from nemo_emmett.mammoth.routing import ModularTasks
from nemo_emmett.models.archive import EXPECTED as ARCHIVE_EXPECTED
from nemo_emmett.models.base import TranslationModel
from nemo_emmett.models.portable import (
    MOVED_CLASSES,  # noqa: F401 (re-exported: where it lived)
    TOKENIZER_DIR,
    class_path,
    import_model_class,
    model_sampling_rate,
    self_contained_config,
    tokenizer_members,
    with_tokenizer,
    write_tokenizer,
)
from nemo_emmett.models.pretrained import CONFIG as PRETRAINED_CONFIG
from nemo_emmett.models.pretrained import fill_weights
from nemo_emmett.parts import lora
from nemo_emmett.parts.cache import content_folder

log = logging.getLogger(__name__)

FORMAT = "nemo_emmett.export"
FORMAT_VERSION = 1
SUFFIX = ".emmett"
DEFAULT_MODEL_CLASS = "nemo_emmett.models.salm_t5.SalmT5"
META, CONFIG, WEIGHTS, GENERATION = "meta.json", "model_config.yaml", "model_weights.pt", "generation_config.json"
ADAPTER_DIR = "adapter"
ADAPTER_CONFIG, ADAPTER_WEIGHTS = f"{ADAPTER_DIR}/{lora.CONFIG_FILE}", f"{ADAPTER_DIR}/{lora.WEIGHTS_FILE}"
_REQUIRED = (META, CONFIG, WEIGHTS)
_EXPECTED = (f"a tar archive written by nemo_emmett.export.export_model (examples/export.py) "
             f"holding {', '.join(_REQUIRED)} and {TOKENIZER_DIR}/")


# ---- export ------------------------------------------------------------------------------------
def export_config(model: TranslationModel, tokenizer_path: str) -> dict[str, Any]:
    """The model's config with every external path replaced by what the archive holds."""
    return self_contained_config(model, tokenizer_path)


def export_model(model: TranslationModel, path: str | Path, *, token_equivalent_duration: float | None = None) -> Path:
    """Write ``model`` as one file at ``path`` (see the module docstring); returns the path.

    The file is written next to ``path`` and renamed into place, so a reader never sees half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        stage = Path(tmp) / "content"
        kind, rel = write_tokenizer(model, stage)
        meta: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_class": class_path(model),
            "nemo_emmett_version": _package_version(),
            "sampling_rate": model_sampling_rate(model),
            "tokenizer": {"kind": kind, "path": rel},
        }
        if token_equivalent_duration is not None:
            meta["token_equivalent_duration"] = float(token_equivalent_duration)
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        members = [META, CONFIG, TOKENIZER_DIR]
        if lora.has_lora(model):  # in PEFT's format, not in model_weights.pt
            lora.save_adapter(model, stage / ADAPTER_DIR)
            for key in lora.adapter_keys(model):
                del state[key]
            members += [ADAPTER_CONFIG, ADAPTER_WEIGHTS]
        parts: dict[str, dict[str, torch.Tensor]] = {}
        if isinstance(model, ModularTasks):  # each component once, in a member of its own
            parts, state = split_state(state, model.components.values())
            meta["components"] = {name: component_member(name) for name in parts}
        (stage / META).write_text(json.dumps(meta, indent=2) + "\n")
        (stage / CONFIG).write_text(OmegaConf.to_yaml(OmegaConf.create(export_config(model, rel))))
        generation = getattr(model.backbone, "generation_config", None)
        if generation is not None:
            (stage / GENERATION).write_text(generation.to_json_string())
            members.append(GENERATION)
        for name, part in parts.items():
            (stage / component_member(name)).parent.mkdir(exist_ok=True)
            torch.save(part, stage / component_member(name))
            members.append(component_member(name))
        torch.save(state, stage / WEIGHTS)
        members.append(WEIGHTS)  # last: the small members are found without reading past the weights
        archive = Path(tmp) / "model.tar"
        with tarfile.open(archive, "w") as tar:
            for name in members:
                tar.add(stage / name, arcname=name)
        os.replace(archive, path)
    log.info("Exported %s to %s", class_path(model), path)
    return path


# ---- restore -----------------------------------------------------------------------------------
def read_meta(path: str | Path) -> dict[str, Any]:
    """``meta.json`` of an export (raises like :func:`restore_model` on anything else)."""
    with _open_export(path) as tar:
        return _read_json(tar, META, path)


def restore_model(path: str | Path, map_location: str | torch.device = "cpu",
                  directions: list[str] | None = None, *, merge_lora: bool = False) -> TranslationModel:
    """The model in an export file, on ``map_location``, in eval mode, with strictly loaded weights.
    ``merge_lora``: LoRA adapters merged into their base weights (for inference; ``TranslationModel.merge_lora``).

    ``directions`` (modular models): only the tasks of these directions (``mt:en-de``) or task names are
    built, and only their components are read from the archive."""
    path = Path(path)
    with _open_export(path) as tar:
        meta = _read_json(tar, META, path)
        if meta.get("format") != FORMAT or int(meta.get("format_version", 0)) > FORMAT_VERSION:
            raise ValueError(f"{str(path)!r}: meta.json says format {meta.get('format')!r} version "
                             f"{meta.get('format_version')!r}; expected {FORMAT!r} version <= {FORMAT_VERSION} "
                             f"(a newer nemo_emmett may have written it)")
        cls = _import_model_class(meta.get("model_class"), path, meta.get("nemo_emmett_version"))
        cfg = OmegaConf.to_container(OmegaConf.create(_read_member(tar, CONFIG, path).decode()), resolve=True)
        tok_dir = _extract_tokenizer(tar, path)
        tok_path = tok_dir / PurePosixPath(meta["tokenizer"]["path"]).relative_to(TOKENIZER_DIR)
        cfg = with_tokenizer(cfg, meta["tokenizer"]["kind"], tok_path)
        if directions is not None:
            cfg = _restricted(cfg, directions, path)
        model = cls(cfg)
        generation = _optional_member(tar, GENERATION)
        if generation is not None and hasattr(model.backbone, "generation_config"):
            from transformers import GenerationConfig

            model.backbone.generation_config = GenerationConfig.from_dict(json.loads(generation))
        state = _load_member(tar, WEIGHTS)
        components = meta.get("components", {})
        wanted = model.components if components else {}
        for name in wanted:
            if name not in components:
                raise ValueError(f"{str(path)!r}: component {name!r} is not in the archive (it has {sorted(components)})")
            state.update(_load_member(tar, components[name]))
        adapter = _optional_member(tar, ADAPTER_CONFIG), _optional_member(tar, ADAPTER_WEIGHTS)
    state = lora.upgrade_lora_keys(state)  # an export written before peft
    return fill_weights(model, state, adapter, str(path), weights_file=WEIGHTS, merge_lora=merge_lora,
                        map_location=map_location)


def load_model(path: str | Path, *, map_location: str | torch.device = "cpu", model_class: str | None = None,
               directions: list[str] | None = None, merge_lora: bool = False) -> TranslationModel:
    """A saved model of any of the package's formats: a ``save_pretrained`` folder or its ``save_to``
    archive (``TranslationModel.from_pretrained`` / ``restore_from``), an ``.emmett`` export
    (:func:`restore_model`) or a Lightning ``.ckpt`` of a ``TranslationModel``.
    ``directions``: a modular model with only those tasks (a checkpoint is still read whole).
    ``merge_lora``: LoRA adapters merged into their base weights (inference).

    A checkpoint holds the config and weights, not the files the config names (tokenizer, backbone
    folder, ASR ``.nemo``): they must still exist. ``model_class`` (checkpoints only) overrides the
    class the checkpoint records (``TranslationModel.on_save_checkpoint``; SALM-T5 for older ones). Checkpoints are unpickled in full: load only files you trust."""
    path = Path(path)
    saved = {"directions": directions, "map_location": map_location, "merge_lora": merge_lora}
    if path.is_dir():
        return TranslationModel.from_pretrained(path, **saved)
    if not path.is_file():
        raise FileNotFoundError(f"model file or folder {str(path)!r} does not exist")
    if tarfile.is_tarfile(path):
        with tarfile.open(path, "r:") as tar:
            pretrained = PRETRAINED_CONFIG in tar.getnames()
        if pretrained:
            return TranslationModel.restore_from(path, **saved)
        return restore_model(path, map_location, directions, merge_lora=merge_lora)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{str(path)!r} is neither a saved model ({ARCHIVE_EXPECTED}; {_EXPECTED}) nor a "
                         "Lightning checkpoint (.ckpt)")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    cfg = ckpt.get("hyper_parameters", {}).get("cfg") if isinstance(ckpt, dict) else None
    if cfg is None or "state_dict" not in ckpt:
        raise ValueError(f"{str(path)!r} is not a Lightning checkpoint of a nemo_emmett model "
                         "(expected 'state_dict' and 'hyper_parameters' with 'cfg')")
    cfg = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    _check_local_files(cfg, path)
    cls = _import_model_class(model_class or ckpt.get("nemo_emmett_model_class", DEFAULT_MODEL_CLASS), path, None)
    state = lora.upgrade_lora_keys(ckpt["state_dict"])
    if directions is not None:
        cfg = _restricted(cfg, directions, path)
    model = cls(cfg)
    if directions is not None:  # the other tasks' components are not in this model
        state = {k: v for k, v in state.items() if k in model.state_dict()}
    model.load_state_dict(state, strict=True)
    if merge_lora:
        model.merge_lora()
    return model.to(map_location).eval()


# ---- helpers -----------------------------------------------------------------------------------
def _restricted(cfg: dict[str, Any], directions: list[str], path: Path | str) -> dict[str, Any]:
    if "modular" not in cfg:  # not modular: every direction needs the whole model
        return cfg
    try:
        return restrict_tasks(cfg, directions)
    except ValueError as e:
        raise ValueError(f"{str(path)!r}: {e}") from e


def _load_member(tar: tarfile.TarFile, name: str) -> dict[str, torch.Tensor]:
    return torch.load(tar.extractfile(tar.getmember(name)), map_location="cpu", weights_only=True)


def _package_version() -> str:
    from nemo_emmett import __version__

    return __version__


@contextmanager
def _open_export(path: str | Path) -> Iterator[tarfile.TarFile]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model export {str(path)!r} does not exist")
    if not tarfile.is_tarfile(path):
        raise ValueError(f"{str(path)!r} is not a nemo_emmett model export: expected {_EXPECTED}")
    with tarfile.open(path, "r:") as tar:
        missing = [m for m in _REQUIRED if m not in set(tar.getnames())]
        if missing:
            raise ValueError(f"{str(path)!r} is a tar archive but not a nemo_emmett model export: it lacks "
                             f"{', '.join(missing)} (expected {_EXPECTED})")
        yield tar


def _optional_member(tar: tarfile.TarFile, name: str) -> bytes | None:
    try:
        member = tar.getmember(name)
    except KeyError:
        return None
    f = tar.extractfile(member)
    return None if f is None else f.read()


def _read_member(tar: tarfile.TarFile, name: str, path: Path | str) -> bytes:
    data = _optional_member(tar, name)
    if data is None:
        raise ValueError(f"{str(path)!r}: {name} is not a regular file in the archive (expected {_EXPECTED})")
    return data


def _read_json(tar: tarfile.TarFile, name: str, path: Path | str) -> dict[str, Any]:
    try:
        return json.loads(_read_member(tar, name, path))
    except json.JSONDecodeError as e:
        raise ValueError(f"{str(path)!r}: {name} is not valid JSON ({e})") from e


def _import_model_class(name: Any, path: Path | str, version: str | None) -> type[TranslationModel]:
    return import_model_class(name, path, version, TranslationModel)


def _extract_tokenizer(tar: tarfile.TarFile, path: Path) -> Path:
    """The archive's ``tokenizer/`` files in a folder keyed by their content (kept for reuse)."""
    files = tokenizer_members(tar, path)
    if not files:
        raise ValueError(f"{str(path)!r}: no {TOKENIZER_DIR}/ files in the archive (expected {_EXPECTED})")
    return content_folder(files, "exports", "tok")


def _check_local_files(cfg: dict[str, Any], ckpt: Path) -> None:
    """A checkpoint names its tokenizer, backbone and ASR model by path: they must be here."""
    wanted = {
        "tokenizer.spm_path": cfg.get("tokenizer", {}).get("spm_path"),
        "tokenizer.hf_path": cfg.get("tokenizer", {}).get("hf_path"),
        "backbone.pretrained_path": cfg.get("backbone", {}).get("pretrained_path"),
        "perception.pretrained_asr": cfg.get("perception", {}).get("pretrained_asr"),
    }
    for field, value in wanted.items():
        if value is not None and not Path(value).exists():
            raise FileNotFoundError(
                f"checkpoint {str(ckpt)!r} needs {field} {value!r}, which does not exist here. A Lightning checkpoint "
                f"refers to these files by path: export it where they exist (python examples/export.py "
                f"--checkpoint {ckpt.name} --out model{SUFFIX}) to get one self-contained file"
            )

