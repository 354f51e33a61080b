"""A model as a Hugging Face-style folder (config.json, safetensors, tokenizer, PEFT adapters) and back.

``TranslationModel.save_pretrained`` / ``from_pretrained`` delegate here.

The contract of ``huggingface_hub.ModelHubMixin`` (which NeMo's speechlm2 ``HFHubMixin`` builds on),
without the hub: a folder holding

* ``config.json``: ``format`` (``"nemo_emmett.pretrained"``), ``format_version``, ``model_class``
  (``nemo_emmett.models.salm_t5.SalmT5``), ``model_type`` ``"nemo_emmett"`` and ``architectures`` (as
  NeMo writes them, so tools can tell what the folder is), ``nemo_emmett_version``, ``sampling_rate``,
  ``token_equivalent_duration`` (when given), ``tokenizer`` (``{"kind": "spm"|"hf", "path": ...}``),
  ``components`` (modular models: ``{name: file}``) and ``cfg``: the model config made self-contained
  (``models/portable.py``: nothing outside the folder is needed).
* ``model.safetensors``: the weights, tied tensors once (``parts/tensor_files.py``); for modular models
  only what belongs to no component, each component in ``components/<name>.safetensors``
  (``TranslationModel.split_weights``), so that ``from_pretrained(..., directions=[...])`` builds and
  reads only those directions' components.
* ``tokenizer/``: ``tokenizer.model`` (SentencePiece) or the Hugging Face tokenizer files
  (``AutoTokenizer.from_pretrained(folder, subfolder="tokenizer")``).
* ``adapter/``: LoRA adapters in PEFT's own format (``adapter_config.json``, ``adapter_model.safetensors``),
  not in ``model.safetensors`` (``parts/lora.py``).
* ``generation_config.json``: the backbone's generation defaults, where it has them.

The methods and files are the mixin's, but not its code: its ``from_pretrained`` downloads any name
that is not a local folder (here, nothing is downloaded: such a name is an error that says so), and it
reads the weights as one file, where a modular model reads only some components' files.
The ``.emmett`` export (``export.py``) is the older single-file format; ``models/archive.py`` packs
this folder into one file."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import torch
from torch import nn

from nemo_emmett.models.portable import (
    TOKENIZER_DIR,
    class_path,
    import_model_class,
    model_sampling_rate,
    self_contained_config,
    with_tokenizer,
    write_tokenizer,
)
from nemo_emmett.parts import lora
from nemo_emmett.parts.tensor_files import load_state, save_state

FORMAT, FORMAT_VERSION = "nemo_emmett.pretrained", 1
CONFIG, WEIGHTS, GENERATION = "config.json", "model.safetensors", "generation_config.json"
COMPONENTS_DIR, ADAPTER_DIR = "components", "adapter"
ADAPTER_CONFIG, ADAPTER_WEIGHTS = f"{ADAPTER_DIR}/{lora.CONFIG_FILE}", f"{ADAPTER_DIR}/{lora.WEIGHTS_FILE}"
EXPECTED = f"a folder written by TranslationModel.save_pretrained (emmett-export), holding {CONFIG}, {WEIGHTS} and tokenizer/"


class SavedFiles(Protocol):
    """Where a saved model's files are read from: its folder, or an archive of it (``models/archive.py``)."""

    where: str
    """The folder or file, for errors."""

    def read(self, name: str) -> bytes | None:
        """The bytes of the file ``name`` (relative, ``/``-separated); None: not there."""

    def state(self, name: str) -> dict[str, torch.Tensor] | None:
        """The safetensors file ``name`` as a state dict; None: not there."""

    def tokenizer_root(self) -> Path:
        """A local folder in which the tokenizer's ``path`` (``config.json``) exists."""


def component_file(name: str) -> str:
    return f"{COMPONENTS_DIR}/{name}.safetensors"


# ---- save --------------------------------------------------------------------------------------
def write_files(model: nn.Module, root: Path, *, token_equivalent_duration: float | None = None) -> list[str]:
    """Every file of the saved model into the empty folder ``root``; returns their names, the small
    ones first and ``model.safetensors`` last (the order of an archive's members)."""
    kind, tok_path = write_tokenizer(model, root)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    names = [CONFIG, TOKENIZER_DIR]
    if lora.has_lora(model):  # in PEFT's format, not in model.safetensors
        lora.save_adapter(model, root / ADAPTER_DIR)
        for key in lora.adapter_keys(model):
            del state[key]
        names += [ADAPTER_CONFIG, ADAPTER_WEIGHTS]
    generation = getattr(model.backbone, "generation_config", None)
    if generation is not None:
        (root / GENERATION).write_text(generation.to_json_string())
        names.append(GENERATION)
    parts, rest = model.split_weights(state)
    for name, part in parts.items():
        (root / COMPONENTS_DIR).mkdir(exist_ok=True)
        save_state(part, root / component_file(name))
        names.append(component_file(name))
    save_state(rest, root / WEIGHTS)
    names.append(WEIGHTS)
    config: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "model_class": class_path(model),
        "model_type": "nemo_emmett", "architectures": [type(model).__name__],
        "nemo_emmett_version": _package_version(), "sampling_rate": model_sampling_rate(model),
        "tokenizer": {"kind": kind, "path": tok_path},
        "components": {name: component_file(name) for name in parts},
        "cfg": self_contained_config(model, tok_path),
    }
    if token_equivalent_duration is not None:
        config["token_equivalent_duration"] = float(token_equivalent_duration)
    (root / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return names


def save_folder(model: nn.Module, folder: str | Path, *, token_equivalent_duration: float | None = None) -> Path:
    """``model`` as the folder ``folder`` (see the module docstring); returns it. The folder is written
    beside it and moved into place, so a reader never sees half of it; an existing folder is replaced
    only if it is empty or a saved model itself."""
    folder = Path(folder)
    if folder.exists() and not (folder.is_dir() and (not any(folder.iterdir()) or _is_saved_model(folder))):
        raise FileExistsError(f"{str(folder)!r} exists and is not an empty folder or a saved nemo_emmett model: "
                              "save_pretrained writes a new folder (or replaces a saved model)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.partial-"))
    try:
        write_files(model, stage, token_equivalent_duration=token_equivalent_duration)
        old = None
        if folder.exists():
            old = folder.parent / f"{stage.name}.old"
            os.rename(folder, old)
        os.rename(stage, folder)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return folder


def _is_saved_model(folder: Path) -> bool:
    """Whether ``folder`` holds a saved model of this format (a Hugging Face model's config.json is not one)."""
    try:
        return json.loads((folder / CONFIG).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


# ---- load --------------------------------------------------------------------------------------
class FolderFiles:
    """A saved model's folder (:class:`SavedFiles`)."""

    def __init__(self, folder: Path):
        self.folder, self.where = folder, str(folder)

    def read(self, name: str) -> bytes | None:
        path = self.folder / name
        return path.read_bytes() if path.is_file() else None

    def state(self, name: str) -> dict[str, torch.Tensor] | None:
        path = self.folder / name
        return load_state(path) if path.is_file() else None

    def tokenizer_root(self) -> Path:
        return self.folder


def open_folder(path: str | Path) -> FolderFiles:
    """The files of the folder ``path``, checked to be a saved model; errors name it and say what was expected."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{str(path)!r} is not a local folder or file: from_pretrained loads {EXPECTED} "
                                "(nothing is downloaded: give the path of a local folder or file)")
    if not path.is_dir():
        raise ValueError(f"{str(path)!r} is not a folder: expected {EXPECTED}")
    if not (path / CONFIG).is_file():
        raise FileNotFoundError(f"{str(path)!r} has no {CONFIG}: expected {EXPECTED}")
    return FolderFiles(path)


def read_config(files: SavedFiles) -> dict[str, Any]:
    """``config.json``, checked to be of this format and a version this code reads."""
    data = files.read(CONFIG)
    if data is None:
        raise FileNotFoundError(f"{files.where!r} has no {CONFIG}: expected {EXPECTED}")
    try:
        config = json.loads(data)
    except json.JSONDecodeError as e:
        raise ValueError(f"{files.where!r}: {CONFIG} is not valid JSON ({e})") from e
    if not isinstance(config, dict) or config.get("format") != FORMAT or not isinstance(config.get("cfg"), dict):
        raise ValueError(f"{files.where!r}: {CONFIG} is not a nemo_emmett model's (format "
                         f"{config.get('format') if isinstance(config, dict) else None!r}); expected {EXPECTED} "
                         f"(format {FORMAT!r}, with 'cfg')")
    if int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{files.where!r}: {CONFIG} says format_version {config['format_version']}; this nemo_emmett "
                         f"reads <= {FORMAT_VERSION} (a newer nemo_emmett wrote it)")
    return config


def load_saved(files: SavedFiles, cls: type, *, directions: list[str] | None = None,
               map_location: str | torch.device = "cpu", merge_lora: bool = False) -> nn.Module:
    """The saved model in ``files``, of the class ``config.json`` names (``cls`` or a subclass), on
    ``map_location``, in eval mode, with strictly loaded weights; ``directions``: only those tasks'
    components, and only their files read; ``merge_lora``: adapters merged into their base weights."""
    config = read_config(files)
    model_cls = import_model_class(config.get("model_class"), files.where, config.get("nemo_emmett_version"), cls)
    tok = config["tokenizer"]
    cfg = with_tokenizer(config["cfg"], tok["kind"], files.tokenizer_root() / PurePosixPath(tok["path"]))
    if directions is not None:
        try:
            cfg = model_cls.restricted_config(cfg, list(directions))
        except ValueError as e:
            raise ValueError(f"{files.where!r}: {e}") from e
    model = model_cls(cfg)
    generation = files.read(GENERATION)
    if generation is not None and hasattr(model.backbone, "generation_config"):
        from transformers import GenerationConfig

        model.backbone.generation_config = GenerationConfig.from_dict(json.loads(generation))
    state = _weights(files, WEIGHTS)
    saved = config.get("components") or {}
    for name in model.split_weights(model.state_dict())[0]:
        if name not in saved:
            raise ValueError(f"{files.where!r}: component {name!r} is not in {CONFIG} (it lists {sorted(saved)})")
        state.update(_weights(files, saved[name], f"the weights of component {name!r}"))
    adapter = files.read(ADAPTER_CONFIG), files.read(ADAPTER_WEIGHTS)
    return fill_weights(model, state, adapter, files.where, merge_lora=merge_lora, map_location=map_location)


def fill_weights(model: nn.Module, state: dict[str, torch.Tensor], adapter: tuple[bytes | None, bytes | None],
                 where: str, *, weights_file: str = WEIGHTS, merge_lora: bool = False,
                 map_location: Any = "cpu") -> nn.Module:
    """``model`` with its saved weights: ``state`` exactly (an error naming ``where`` and the keys that
    do not fit), or, with ``adapter`` (PEFT's config and weights files), the adapters from it and the
    rest from ``state`` (read from ``weights_file``, named in errors); LoRA merged when asked; on
    ``map_location``, in eval mode."""
    if adapter == (None, None):
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise RuntimeError(f"{where!r}: the weights do not fit {type(model).__name__}: missing keys "
                               f"{sorted(result.missing_keys)[:5]}, unexpected keys {sorted(result.unexpected_keys)[:5]}")
    else:
        lora.load_adapter_files(model, *adapter, source=f"{where!r}: {ADAPTER_DIR}/")
        lora.load_state_without_adapters(model, state, source=f"{where!r}: {weights_file}")
    if merge_lora:
        model.merge_lora()
    return model.to(map_location).eval()


def _weights(files: SavedFiles, name: str, what: str = "the weights") -> dict[str, torch.Tensor]:
    try:
        state = files.state(name)
    except Exception as e:  # safetensors' own errors have no common base class
        raise ValueError(f"{files.where!r}: {name} is not a safetensors file ({type(e).__name__}: {e})") from e
    if state is None:
        raise FileNotFoundError(f"{files.where!r} has no {name} ({what}): expected {EXPECTED}")
    return state


def _package_version() -> str:
    from nemo_emmett import __version__

    return __version__
