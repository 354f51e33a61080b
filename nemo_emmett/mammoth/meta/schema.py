"""The meta-config of ``examples/config_config.py``: typed fields with their defaults, and parsing
(unknown or missing keys, wrong types and bad overrides are errors that name the key).
:mod:`nemo_emmett.mammoth.meta.expand` expands it into the complete config."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nemo_emmett.data.examples import TASKS
from nemo_emmett.data.prepare.templates import MODES
from nemo_emmett.mammoth.sharing import check_id

KINDS = ("bitext", "shar")
_BITEXT_KEYS = ("name", "task", "kind", "pairs", "src", "tgt", "mode", "valid_src", "valid_tgt", "valid_max_lines")
_SHAR_KEYS = ("name", "task", "kind", "pairs", "path", "valid_path")


@dataclass(frozen=True)
class StackSpec:
    layers: int
    """Layers in the stack at this position."""
    pattern: str
    """Sharing pattern of its components (``FULL``, ``SRC_LANGUAGE``, ... ``parts/sharing.py``)."""


@dataclass
class SharingSpec:
    encoder: list[StackSpec] = field(default_factory=lambda: [StackSpec(1, "SRC_LANGUAGE"), StackSpec(1, "FULL")])
    """One stack per encoder position, in order."""
    decoder: list[StackSpec] = field(default_factory=lambda: [StackSpec(1, "FULL"), StackSpec(1, "TGT_LANGUAGE")])
    embed: str = "FULL"
    """Pattern of the token embeddings (source side for the source, target side for the target)."""


@dataclass
class CorpusSpec:
    name: str
    """Dataset name: the Shar subfolder and the ``dataset`` tag of its sources."""
    task: str = "mt"
    kind: str = "bitext"
    """``bitext``: raw line-aligned files, prepared later (mt only); ``shar``: prepared Shar folders."""
    pairs: str | list[str] = "all"
    """``all``: every direction among ``languages`` that has data (asr: ``en-en`` ...); or a list like ``[en-de]``."""
    src: str | None = None
    """bitext: source file template (symmetric mode: the ``side_a`` file), e.g. ``train.{src_lang}.gz``."""
    tgt: str | None = None
    mode: str = "directional"
    """bitext: ``directional`` or ``symmetric`` (``nemo_emmett.data.prepare.templates``)."""
    valid_src: str | None = None
    valid_tgt: str | None = None
    valid_max_lines: int | None = None
    """bitext: prepare at most this many validation lines per direction (validation decodes every one)."""
    path: str | None = None
    """shar: folder template, e.g. ``shar/multi30k_speech/st_{lang_pair}``."""
    valid_path: str | None = None


@dataclass
class MetaConfig:
    name: str
    languages: list[str]
    corpora: list[CorpusSpec]
    base: str = "mammoth"
    """Config the output extends (``defaults: [<base>, _self_]``)."""
    shar_root: str = "shar"
    """Where bitext corpora are prepared (``emmett-prepare --out``)."""
    groups: dict[str, list[str]] | None = None
    """Language groups for the GROUP patterns; or give ``distances`` and ``num_groups``."""
    distances: str | dict[str, dict[str, float]] | None = None
    """Language distances (nested mapping, or a csv/tsv square matrix with a header row of languages),
    clustered into ``num_groups`` groups by average linkage."""
    num_groups: int | None = None
    temperature: float | None = None
    """Task weights p_i ~ n_i^(1/T) from corpus sizes; the default (1.0) when no ``weights`` are given."""
    weights: dict[str, float] | None = None
    """Explicit weight per task name (every task; 0: validated, not trained)."""
    curriculum: dict[str, int] = field(default_factory=dict)
    """Task name -> the training step it joins the mix at (``introduce_at_step`` of its source)."""
    sharing: SharingSpec = field(default_factory=SharingSpec)
    target_tags: str = "auto"
    """auto: a prompt ``<{target_lang}>`` where a decoder stack serves several target languages."""
    devices: int | None = None
    """Number of devices to allocate tasks to (:func:`allocate_devices`); null: no allocation."""
    d_model: int | None = None
    """Model sizes for ``model.modular``; null: the base config's."""
    n_heads: int | None = None
    d_ff: int | None = None
    dropout: float | None = None


# ---- parsing ----------------------------------------------------------------------------------
def load_meta_config(path: str | Path, overrides: Sequence[str] = ()) -> MetaConfig:
    """The meta-config in ``path``, with Hydra-style ``key=value`` ``overrides`` (``sharing.embed=LANGUAGE``,
    ``'sharing.encoder=[{layers: 2, pattern: FULL}]'``) replacing what the file says."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"meta-config {str(path)!r} does not exist")
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not of the form key=value (e.g. sharing.embed=LANGUAGE)")
        node, parts = raw, key.split(".")
        for i, part in enumerate(parts):
            if isinstance(node, list):
                if not (part.isdigit() and int(part) < len(node)):
                    raise ValueError(f"override {item!r}: no item {part} in a list of {len(node)}")
                part = int(part)
            elif not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {'.'.join(parts[:i])!r} is neither a mapping nor a list")
            if i == len(parts) - 1:
                node[part] = yaml.safe_load(value)
            else:
                node = node.setdefault(part, {}) if isinstance(node, dict) else node[part]
    return parse_meta_config(raw)


def parse_meta_config(raw: Any) -> MetaConfig:
    """A mapping (from YAML) -> :class:`MetaConfig`; unknown or missing keys are errors naming them."""
    values = _keys(MetaConfig, raw, "the meta-config")
    values["languages"] = _str_list(values["languages"], "languages")
    corpora = values["corpora"]
    if not isinstance(corpora, list) or not corpora:
        raise ValueError(f"corpora: expected a non-empty list of corpora, got {corpora!r}")
    values["corpora"] = [_corpus(c, i) for i, c in enumerate(corpora)]
    if "sharing" in values:
        sharing = _keys(SharingSpec, values["sharing"], "sharing")
        for side in ("encoder", "decoder"):
            if side in sharing:
                sharing[side] = _stacks(sharing[side], f"sharing.{side}")
        values["sharing"] = SharingSpec(**sharing)
    meta = MetaConfig(**values)
    for key in ("name", "base", "shar_root"):
        if not isinstance(getattr(meta, key), str) or not getattr(meta, key):
            raise ValueError(f"{key}: expected a non-empty string, got {getattr(meta, key)!r}")
    for key in ("d_model", "n_heads", "d_ff"):
        value = getattr(meta, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{key}: expected an integer >= 1, got {value!r}")
    if meta.temperature is not None and (isinstance(meta.temperature, bool)
                                         or not isinstance(meta.temperature, int | float)):
        raise ValueError(f"temperature: expected a number > 0, got {meta.temperature!r}")
    if meta.dropout is not None and not (isinstance(meta.dropout, int | float) and 0 <= meta.dropout < 1):
        raise ValueError(f"dropout: expected a number in [0, 1), got {meta.dropout!r}")
    return meta


def _keys(cls: type, raw: Any, where: str, allowed: Sequence[str] | None = None) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {raw!r}")
    allowed = allowed or [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in allowed:
            raise ValueError(f"{where}: unknown key {key!r}; expected one of {', '.join(allowed)}")
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and f.name not in raw:
            raise ValueError(f"{where}: missing key {f.name!r}")
    return dict(raw)


def _corpus(raw: Any, i: int) -> CorpusSpec:
    where = f"corpora[{i}]" + (f" ({raw.get('name')!r})" if isinstance(raw, Mapping) and "name" in raw else "")
    kind = raw.get("kind", CorpusSpec.kind) if isinstance(raw, Mapping) else None
    if isinstance(raw, Mapping) and kind not in KINDS:
        raise ValueError(f"{where}: kind {kind!r} is not one of {KINDS}")
    values = _keys(CorpusSpec, raw, where, _BITEXT_KEYS if kind == "bitext" else _SHAR_KEYS)
    spec = CorpusSpec(**values)
    check_id(spec.name, f"{where}: name")
    if spec.task not in TASKS:
        raise ValueError(f"{where}: task {spec.task!r} is not one of {TASKS}")
    if kind == "bitext":
        if spec.task != "mt":
            raise ValueError(f"{where}: kind bitext prepares mt folders only, got task {spec.task!r}; "
                             "use kind shar for prepared st/asr folders")
        for key in ("src", "tgt"):
            if getattr(spec, key) is None:
                raise ValueError(f"{where}: kind bitext needs {key!r} (a path template)")
        if spec.mode not in MODES:
            raise ValueError(f"{where}: mode {spec.mode!r} is not one of {MODES}")
        if (spec.valid_src is None) != (spec.valid_tgt is None):
            raise ValueError(f"{where}: give both valid_src and valid_tgt, or neither")
        n = spec.valid_max_lines
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"{where}: valid_max_lines must be an integer >= 1, got {n!r}")
    elif spec.path is None:
        raise ValueError(f"{where}: kind shar needs 'path' (a folder template, e.g. shar/{{lang_pair}})")
    if spec.pairs != "all" and not (isinstance(spec.pairs, list) and spec.pairs):
        raise ValueError(f"{where}: pairs must be 'all' or a list like [en-de, de-en], got {spec.pairs!r}")
    return spec


def _stacks(raw: Any, where: str) -> list[StackSpec]:
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{where}: expected a non-empty list of stacks like [{{layers: 1, pattern: FULL}}], got {raw!r}")
    return [StackSpec(**_keys(StackSpec, s, f"{where}[{i}]")) for i, s in enumerate(raw)]


def _str_list(raw: Any, where: str) -> list[str]:
    if not isinstance(raw, list) or not raw or not all(isinstance(x, str) for x in raw):
        raise ValueError(f"{where}: expected a non-empty list of names, got {raw!r}")
    return raw
