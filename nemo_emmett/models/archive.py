"""A saved model's folder as ONE file (``save_to`` / ``restore_from``): an uncompressed tar, NeMo's ``.nemo`` idea.

The members are the files of the ``save_pretrained`` folder (``models/pretrained.py``), at the same
relative names, ``config.json`` first and ``model.safetensors`` last; ``tar -xf`` gives the folder back,
which ``from_pretrained`` loads. Restoring reads ``config.json`` and the weights straight from the
archive (only the components asked for) and extracts only the tokenizer, into
``<cache>/pretrained/tok-<hash of its bytes>`` (``$NEMO_EMMETT_CACHE``), where it stays readable for as long
as the model lives. Suffix ``.nemo`` by convention (any name works); it is not a NeMo ``ModelPT`` file.
A ``.emmett`` export (``meta.json``, the older format) is refused with the way to load or convert it."""

from __future__ import annotations

import os
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from nemo_emmett.models.portable import TOKENIZER_DIR, tokenizer_members
from nemo_emmett.models.pretrained import CONFIG, WEIGHTS, write_files
from nemo_emmett.parts.cache import content_folder
from nemo_emmett.parts.tensor_files import load_state

SUFFIX = ".nemo"
EXPECTED = (f"an uncompressed tar written by TranslationModel.save_to (emmett-export --out model{SUFFIX}) "
            f"holding {CONFIG}, {WEIGHTS} and {TOKENIZER_DIR}/")
LEGACY_MEMBERS = ("meta.json", "model_weights.pt")
"""What a ``.emmett`` export (``export.py``) holds instead of ``config.json``."""


def save_archive(model: nn.Module, path: str | Path, *, token_equivalent_duration: float | None = None) -> Path:
    """``model`` as one archive at ``path``; returns the path. Written beside it and renamed into
    place, so a reader never sees half of it."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{str(path)!r} is a folder: save_to writes one file (save_pretrained writes a folder)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        stage = Path(tmp) / "content"
        stage.mkdir()
        names = write_files(model, stage, token_equivalent_duration=token_equivalent_duration)
        archive = Path(tmp) / "model.tar"
        with tarfile.open(archive, "w") as tar:  # "w": no compression (weights do not compress; members seek)
            for name in names:
                tar.add(stage / name, arcname=name)
        os.replace(archive, path)
    return path


class ArchiveFiles:
    """An open archive's members (``models/pretrained.py`` ``SavedFiles``)."""

    def __init__(self, tar: tarfile.TarFile, where: str):
        self.tar, self.where = tar, where
        self._names = set(tar.getnames())

    def read(self, name: str) -> bytes | None:
        if name not in self._names:
            return None
        f = self.tar.extractfile(self.tar.getmember(name))
        return None if f is None else f.read()

    def state(self, name: str) -> dict[str, torch.Tensor] | None:
        data = self.read(name)
        return None if data is None else load_state(data)

    def tokenizer_root(self) -> Path:
        files = tokenizer_members(self.tar, self.where)
        if not files:
            raise ValueError(f"{self.where!r}: no {TOKENIZER_DIR}/ files in the archive (expected {EXPECTED})")
        return content_folder({f"{TOKENIZER_DIR}/{k}": v for k, v in files.items()}, "pretrained", "tok")


@contextmanager
def open_archive(path: str | Path) -> Iterator[ArchiveFiles]:
    """The members of the archive ``path``, checked to be one; errors name it and say what was expected."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{str(path)!r} is not a local file: restore_from loads {EXPECTED} "
                                "(nothing is downloaded: give the path of a local file)")
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a folder: load it with from_pretrained (restore_from expects {EXPECTED})")
    if not tarfile.is_tarfile(path):
        raise ValueError(f"{str(path)!r} is not a saved nemo_emmett model: expected {EXPECTED}")
    with tarfile.open(path, "r:") as tar:
        names = set(tar.getnames())
        if CONFIG not in names:
            if set(LEGACY_MEMBERS) <= names:
                raise ValueError(f"{str(path)!r} is a .emmett export (meta.json, model_weights.pt), the older format: "
                                 f"load it with nemo_emmett.export.load_model (emmett-translate --model reads it too), "
                                 f"or convert it: emmett-export --checkpoint {path.name} --out model{SUFFIX}")
            raise ValueError(f"{str(path)!r} is a tar archive but not a saved nemo_emmett model: it lacks {CONFIG} "
                             f"(expected {EXPECTED})")
        yield ArchiveFiles(tar, str(path))
