"""The meta-config of ``examples/config_config.py``: typed fields with their defaults, and parsing.

OmegaConf does the parsing: the YAML merged into the structured :class:`MetaConfig` (unknown keys, wrong
types and missing values are its errors, re-raised as ValueErrors naming the key), ``key=value``
overrides applied as an OmegaConf dotlist (``corpora.0.pairs=[en-de]``). What OmegaConf cannot say is
checked here: each corpus kind has its own keys, names are ids, tasks are known.
:mod:`nemo_emmett.mammoth.meta.expand` expands the result into the complete config."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from nemo_emmett.data.examples import TASKS
from nemo_emmett.data.prepare.templates import MODES
from nemo_emmett.data.transforms import parse_transforms
from nemo_emmett.mammoth.meta.allocation_cost import LinkWeights
from nemo_emmett.mammoth.sharing import check_id

KINDS = ("bitext", "shar")
_BITEXT_KEYS = ("name", "task", "kind", "pairs", "src", "tgt", "mode", "valid_src", "valid_tgt", "valid_max_lines", "transforms")
_SHAR_KEYS = ("name", "task", "kind", "pairs", "path", "valid_path", "transforms")


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
class AllocationSpec:
    """How tasks are placed on ``nodes x gpus_per_node`` (``mammoth/meta/allocation_search.py``)."""

    balance_tolerance: float | None = None
    """A rank's share of the training mix may reach ``(1 + balance_tolerance) / devices``; an error when no
    allocation found does. null: at most the greedy allocation's largest share (as balanced as greedy)."""
    tasks_per_device: int | None = None
    """At most this many tasks per rank (memory); null: no limit."""
    intra_node: float = LinkWeights.intra_node
    """Cost of a gradient byte sent between GPUs of one node."""
    inter_node: float = LinkWeights.inter_node
    """Cost of a byte sent between nodes."""
    iterations: int = 20000
    """Moves and swaps the local search proposes (0: the greedy allocation)."""
    seed: int = 0
    steps: int | None = None
    """Training steps the cost is averaged over (curriculum tasks count from their start); null: twice the
    latest curriculum start."""
    vocab_size: int = 8000
    """Weighs embedding components against layer stacks (the tokenizer is not known here)."""
    perception_params: int = 0
    """Parameters of the speech encoder ``perception.full`` (0: not weighed)."""
    bytes_per_param: int = 4
    """Bytes per gradient element (4: fp32)."""


@dataclass
class CorpusSpec:
    name: str
    """Dataset name: the Shar subfolder and the ``dataset`` tag of its sources."""
    task: str = "mt"
    kind: str = "bitext"
    """``bitext``: raw line-aligned files, prepared later (mt only); ``shar``: prepared Shar folders."""
    pairs: Any = "all"
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
    transforms: list[dict[str, Any]] | None = None
    """Training transforms of this corpus's sources (``data/transforms.py``: filters, ``subword_sampling``),
    written into each of its training source entries; null: the meta-config's ``transforms``."""


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
    distances: Any = None
    """Language distances (nested mapping, or a csv/tsv square matrix with a header row of languages),
    clustered into ``num_groups`` groups by average linkage."""
    num_groups: int | None = None
    temperature: float | None = None
    """Task weights p_i ~ n_i^(1/T) from corpus sizes; the default (1.0) when no ``weights`` are given."""
    weights: dict[str, float] | None = None
    """Explicit weight per task name (every task; 0: validated, not trained)."""
    curriculum: dict[str, int] = field(default_factory=dict)
    transforms: list[dict[str, Any]] | None = None
    """Training transforms of every source (``data.transforms`` of the written config); a corpus's own
    ``transforms`` replaces them for its sources."""
    """Task name -> the training step it joins the mix at (``introduce_at_step`` of its source)."""
    sharing: SharingSpec = field(default_factory=SharingSpec)
    target_tags: str = "auto"
    """auto: a prompt ``<{target_lang}>`` where a decoder stack serves several target languages."""
    devices: int | None = None
    """Devices of one node to allocate tasks to (``nodes: 1, gpus_per_node: devices``); null: no allocation."""
    nodes: int | None = None
    """Nodes to allocate tasks to, with ``gpus_per_node`` (instead of ``devices``)."""
    gpus_per_node: int | None = None
    allocation: AllocationSpec = field(default_factory=AllocationSpec)
    d_model: int | None = None
    """Model sizes for ``model.modular``; null: the base config's."""
    n_heads: int | None = None
    d_ff: int | None = None
    dropout: float | None = None


# ---- parsing ----------------------------------------------------------------------------------
def load_meta_config(path: str | Path, overrides: Sequence[str] = ()) -> MetaConfig:
    """The meta-config in ``path``, with ``key=value`` ``overrides`` (an OmegaConf dotlist:
    ``sharing.embed=LANGUAGE``, ``'sharing.encoder=[{layers: 2, pattern: FULL}]'``, ``corpora.0.pairs=[en-de]``)
    replacing what the file says. Errors name the file and the key."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"meta-config {str(path)!r} does not exist")
    try:
        text = OmegaConf.load(path)
    except Exception as e:  # the YAML parser's errors
        raise ValueError(f"{path}: cannot read the YAML ({e})") from e
    if not isinstance(text, DictConfig):
        raise ValueError(f"{path}: the meta-config: expected a mapping, got {OmegaConf.to_container(text)!r}")
    # On the defaults, so an override reaches keys the file leaves out (sharing.decoder.0.layers=2); untyped,
    # so a corpus keeps only the keys given (its kind's key set is checked on them).
    raw = OmegaConf.merge(OmegaConf.to_container(OmegaConf.structured(MetaConfig)), text)
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{path}: override {item!r} is not of the form key=value (e.g. sharing.embed=LANGUAGE)")
        try:
            raw.merge_with_dotlist([item])
        except OmegaConfBaseException as e:
            raise ValueError(f"{path}: override {item!r}: {_key_of(e)}: {_first_line(e)}") from e
    try:
        return parse_meta_config(raw)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


def parse_meta_config(raw: Any) -> MetaConfig:
    """A mapping (from YAML) -> :class:`MetaConfig`; unknown or missing keys are errors naming them."""
    if isinstance(raw, DictConfig | ListConfig):
        raw = OmegaConf.to_container(raw)
    if not isinstance(raw, Mapping):
        raise ValueError(f"the meta-config: expected a mapping, got {raw!r}")
    corpora = raw.get("corpora")
    if isinstance(corpora, list):
        if not corpora:
            raise ValueError("corpora: expected a non-empty list of corpora, got []")
        for i, c in enumerate(corpora):
            _check_corpus_keys(c, i)
    for side in ("encoder", "decoder"):
        stacks = (raw.get("sharing") or {}).get(side) if isinstance(raw.get("sharing"), Mapping) else None
        if stacks is not None and not (isinstance(stacks, list) and stacks):
            raise ValueError(f"sharing.{side}: expected a non-empty list of stacks like [{{layers: 1, pattern: FULL}}], "
                             f"got {stacks!r}")
    meta = typed(MetaConfig, raw)
    if not meta.languages:
        raise ValueError("languages: expected a non-empty list of names, got []")
    for lang in meta.languages:
        check_id(lang, "languages: language")
    for i, c in enumerate(meta.corpora):
        _check_corpus(c, f"corpora[{i}] ({c.name!r})")
        parse_transforms(c.transforms, f"corpora[{i}] ({c.name!r}).transforms")
    parse_transforms(meta.transforms, "transforms")  # an unknown name or impossible bound, named
    for key in ("name", "base", "shar_root"):
        if not getattr(meta, key):
            raise ValueError(f"{key}: expected a non-empty string, got {getattr(meta, key)!r}")
    for key in ("d_model", "n_heads", "d_ff"):
        value = getattr(meta, key)
        if value is not None and value < 1:
            raise ValueError(f"{key}: expected an integer >= 1, got {value!r}")
    if meta.dropout is not None and not 0 <= meta.dropout < 1:
        raise ValueError(f"dropout: expected a number in [0, 1), got {meta.dropout!r}")
    return meta


def typed(cls: type, raw: Mapping[str, Any], where: str = "") -> Any:
    """``raw`` merged into the structured ``cls`` and built. Nested dataclasses and lists of them go
    field by field and item by item: OmegaConf's errors inside a list item lose the item's path."""
    hints = get_type_hints(cls)
    nested = {}
    for f in fields(cls):
        hint, value = hints[f.name], raw.get(f.name)
        item = get_args(hint)[0] if get_origin(hint) is list and get_args(hint) else None
        if is_dataclass(hint) and isinstance(value, Mapping):
            nested[f.name] = typed(hint, value, f"{where}{f.name}.")
        elif item is not None and is_dataclass(item) and isinstance(value, list):
            for i, v in enumerate(value):
                if not isinstance(v, Mapping):
                    raise ValueError(f"{where}{f.name}[{i}]: expected a mapping of {item.__name__}, got {v!r}")
            nested[f.name] = [typed(item, v, f"{where}{f.name}[{i}].") for i, v in enumerate(value)]
    rest = {k: ([] if isinstance(v, list) else {}) if k in nested else v for k, v in raw.items()}  # built above
    try:
        built = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), rest))
    except OmegaConfBaseException as e:
        raise ValueError(_explain(e, cls, where)) from e
    return dataclasses.replace(built, **nested) if nested else built


def _explain(e: OmegaConfBaseException, cls: type, where: str) -> str:
    here = where.rstrip(".") or "the meta-config"
    key = str(e.full_key).rsplit(".", 1)[-1] if e.full_key else ""
    if isinstance(e, ConfigKeyError) and "." not in str(e.full_key):
        return f"{here}: unknown key {key!r}; expected one of {', '.join(f.name for f in fields(cls))}"
    if isinstance(e, MissingMandatoryValue):
        return f"{here}: missing key {key!r}"
    return f"{where}{e.full_key}: {_first_line(e)}"


def _key_of(e: OmegaConfBaseException) -> str:
    return str(e.full_key) if e.full_key else "?"


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _check_corpus_keys(raw: Any, i: int) -> None:
    """Each kind has its own keys: a bitext corpus has files, a shar corpus a folder."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"corpora[{i}]: expected a mapping, got {raw!r}")
    where = f"corpora[{i}]" + (f" ({raw['name']!r})" if "name" in raw else "")
    kind = raw.get("kind", CorpusSpec.kind)
    if kind not in KINDS:
        raise ValueError(f"{where}: kind {kind!r} is not one of {KINDS}")
    allowed = _BITEXT_KEYS if kind == "bitext" else _SHAR_KEYS
    for key in raw:
        if key not in allowed:
            raise ValueError(f"{where}: unknown key {key!r}; expected one of {', '.join(allowed)}")


def _check_corpus(spec: CorpusSpec, where: str) -> None:
    check_id(spec.name, f"{where}: name")
    if spec.task not in TASKS:
        raise ValueError(f"{where}: task {spec.task!r} is not one of {TASKS}")
    if spec.kind == "bitext":
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
        if spec.valid_max_lines is not None and spec.valid_max_lines < 1:
            raise ValueError(f"{where}: valid_max_lines must be an integer >= 1, got {spec.valid_max_lines!r}")
    elif spec.path is None:
        raise ValueError(f"{where}: kind shar needs 'path' (a folder template, e.g. shar/{{lang_pair}})")
    if spec.pairs != "all" and not (isinstance(spec.pairs, list) and spec.pairs):
        raise ValueError(f"{where}: pairs must be 'all' or a list like [en-de, de-en], got {spec.pairs!r}")
