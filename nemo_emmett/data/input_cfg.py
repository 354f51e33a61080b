"""NeMo's dataset list (``data.input_cfg``) read as weighted, tagged entries: one per source.

NeMo's lhotse dataloader (``nemo/collections/common/data/lhotse/cutset.py``, ``read_dataset_config`` and
``parse_and_combine_datasets``) mixes a tree of datasets: each level's ``weight``s are reweighted with that
level's ``reweight_temperature`` (``w_i^T / sum_j w_j^T``, :func:`nemo_reweight`) and each ``group``
splits its own share over its members. A leaf's share of the stream is the product of the shares along
its path. Here the tree is flattened into :class:`InputEntry` records with those products as weights,
so that our stationary multiplexer keeps exactly NeMo's mix (instead of lhotse's ``mux``, whose drawn
shares wander). Tags follow NeMo too: a group's ``tags`` are set on its members after their own, so
an outer tag wins (NeMo applies ``attach_tags`` to the group's whole CutSet after the members').

Pure: nothing is read here but an ``input_cfg`` given as a YAML file. Turning an entry into a Shar
folder (a NeMo manifest, a tarred manifest, a text pair, a foreign Shar folder) or a shard listing
(NeMo's dict of shard files or URLs, streamed in place) is start-up's job (``data/prepare/nemo_inputs.py``);
:func:`source_fields` and :func:`entry_source` then make it a source.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nemo_emmett.data.examples import TASKS

TYPE_KEYS: dict[str, tuple[str, ...]] = {
    "group": ("input_cfg",),
    "lhotse_shar": ("shar_path",),
    "nemo": ("manifest_filepath",),
    "nemo_tarred": ("manifest_filepath", "tarred_audio_filepaths"),
    "txt_pair": ("source_paths", "target_paths"),
}
"""The ``type``s supported, each with its required keys."""
OPTIONAL_KEYS: dict[str, tuple[str, ...]] = {
    "nemo": ("text_field", "lang_field", "target_text_field"),
    "nemo_tarred": ("text_field", "lang_field", "target_text_field"),
    "lhotse_shar": ("target_text_field", "num_examples"),
    "txt_pair": ("source_language", "target_language"),
}
COMMON_KEYS = ("type", "weight", "tags", "name")
"""Every entry may have them; ``name`` (ours, not NeMo's) names the source in logs and the stream's seed."""
TASK_ALIASES = {"ast": "st", "s2t_translation": "st", "translate": "st", "transcribe": "asr"}
"""NeMo's task names (Canary's ``taskname``, the ``ast`` of NeMo's docs) -> ours."""
SOURCE_LANG_TAGS = ("source_lang", "src_lang", "lang")
TARGET_LANG_TAGS = ("target_lang", "tgt_lang")


@dataclass(frozen=True)
class InputEntry:
    """One leaf of ``data.input_cfg``: a dataset, its share of the mix and the tags on its examples."""

    where: str
    """``data.input_cfg[1].input_cfg[0]``: what errors name."""
    type: str
    options: dict[str, Any]
    """The entry's own keys (``manifest_filepath``, ``shar_path``, ...), without type, weight, tags, name."""
    weight: float
    """Its share of the whole mix: the product of the normalised, reweighted shares along its path."""
    tags: dict[str, Any] = field(default_factory=dict)
    """Its tags and its groups', an outer group's winning (NeMo's order)."""
    name: str | None = None


def nemo_reweight(weights: Sequence[float], temperature: float) -> list[float]:
    """NeMo's ``temperature_reweighting``: ``w_i^T / sum_j w_j^T``. T=1 keeps the ratios, T=0 equalises,
    T<1 over-samples the small ones. (``data.size_temperature`` goes the other way: ``n_i^(1/T)``.)"""
    if not (isinstance(temperature, int | float) and math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"reweight_temperature: expected finite numbers >= 0, got {temperature!r}")
    scaled = [float(w) ** temperature for w in weights]
    total = sum(scaled)
    return [s / total for s in scaled]


def load_input_cfg(value: Any, where: str = "data.input_cfg") -> list[Any]:
    """``input_cfg`` as a list: given, or read from the YAML file it names (as NeMo allows)."""
    if isinstance(value, str | Path):
        path = Path(value)
        if not path.is_file():
            raise FileNotFoundError(f"{where}: {str(value)!r} is neither a list of entries nor an existing YAML file")
        value = yaml.safe_load(path.read_text())
        where = f"{where} ({str(path)!r})"
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: expected a non-empty list of entries, got {type(value).__name__} {value!r}")
    return value


def temperatures(reweight_temperature: Any, depth: int) -> list[float]:
    """One temperature per nesting level: NeMo broadcasts a scalar; a list must have one value per level."""
    if reweight_temperature is None:
        return [1.0] * depth
    if isinstance(reweight_temperature, int | float) and not isinstance(reweight_temperature, bool):
        return [float(reweight_temperature)] * depth
    values = list(reweight_temperature) if isinstance(reweight_temperature, list | tuple) else None
    if values is None or len(values) != depth:
        raise ValueError(f"data.reweight_temperature: expected a number or a list of {depth} numbers (one per "
                         f"input_cfg nesting level, outermost first, as NeMo), got {reweight_temperature!r}")
    return [float(v) for v in values]


def nesting_depth(entries: list[Any]) -> int:
    """Levels of ``input_cfg`` lists (the top one counts): how many temperatures NeMo takes."""
    inner = [nesting_depth(load_input_cfg(e["input_cfg"])) for e in entries
             if isinstance(e, Mapping) and e.get("type") == "group" and "input_cfg" in e]
    return 1 + max(inner, default=0)


def flatten_input_cfg(input_cfg: Any, reweight_temperature: Any = None) -> list[InputEntry]:
    """The leaves of ``input_cfg`` with their shares of the mix (summing to 1) and merged tags."""
    entries = load_input_cfg(input_cfg)
    temps = temperatures(reweight_temperature, nesting_depth(entries))
    return _flatten(entries, "data.input_cfg", 1.0, {}, temps)


def _flatten(entries: list[Any], where: str, share: float, outer_tags: dict[str, Any],
             temps: list[float]) -> list[InputEntry]:
    checked = [_check_entry(e, f"{where}[{i}]") for i, e in enumerate(entries)]
    given = [e.get("weight") is not None for e in checked]
    if any(given) and not all(given):
        missing = [f"{where}[{i}]" for i, g in enumerate(given) if not g]
        raise ValueError(f"{where}: give a weight to every entry of the list or to none (equal shares), as NeMo "
                         f"requires; without one: {missing}")
    if all(given):
        weights = [_weight(e["weight"], f"{where}[{i}].weight") for i, e in enumerate(checked)]
        if sum(weights) == 0:
            raise ValueError(f"{where}: the weights of this list sum to zero ({weights}): nothing of it could be "
                             "drawn; give some entry a weight > 0 or remove the list")
        zero = [f"{where}[{i}]" for i, w in enumerate(weights) if w == 0]
        if zero:
            raise ValueError(f"{where}: entries {zero} have weight 0; NeMo refuses weights <= 0: remove them "
                             "instead")
        shares = nemo_reweight(weights, temps[0])
    else:
        shares = [1.0 / len(checked)] * len(checked)
    out = []
    for i, (e, s) in enumerate(zip(checked, shares, strict=True)):
        here = f"{where}[{i}]"
        tags = {**dict(e.get("tags") or {}), **outer_tags}  # the outer group's tags are set last in NeMo
        if e["type"] == "group":
            out.extend(_flatten(load_input_cfg(e["input_cfg"], f"{here}.input_cfg"), f"{here}.input_cfg",
                                share * s, tags, temps[1:]))
            continue
        options = {k: v for k, v in e.items() if k not in COMMON_KEYS}
        out.append(InputEntry(where=here, type=e["type"], options=options, weight=share * s, tags=tags,
                              name=e.get("name")))
    return out


def _check_entry(entry: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: expected an entry (a mapping with a 'type'), got {type(entry).__name__} {entry!r}")
    kind = entry.get("type")
    if kind not in TYPE_KEYS:
        raise ValueError(f"{where}.type: {kind!r} is not supported here; supported: {', '.join(TYPE_KEYS)} "
                         "(NeMo's other types, e.g. lhotse cuts_path or parquet, need emmett-prepare first)")
    missing = [k for k in TYPE_KEYS[kind] if entry.get(k) is None]
    if missing:
        raise ValueError(f"{where}: an entry of type {kind!r} needs {', '.join(TYPE_KEYS[kind])}; missing {missing}")
    allowed = {*COMMON_KEYS, *TYPE_KEYS[kind], *OPTIONAL_KEYS.get(kind, ())}
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown} for type {kind!r}; expected some of {sorted(allowed)}")
    tags = entry.get("tags")
    if tags is not None and not isinstance(tags, Mapping):
        raise ValueError(f"{where}.tags: expected a mapping of tag -> value, got {type(tags).__name__} {tags!r}")
    return entry


def _weight(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{where}: expected a finite number >= 0, got {type(value).__name__} {value!r}")
    return float(value)


def source_fields(entry: InputEntry) -> dict[str, str]:
    """``task``, ``source_lang``, ``target_lang`` and ``dataset`` of an entry's examples, from its tags
    (NeMo's spellings too: ``src_lang``/``tgt_lang``/``lang``, task ``ast``) or, for ``txt_pair``, its
    ``source_language``/``target_language``. An audio entry without a task is ``asr`` when it has no
    target language (or the source's), else ``st``."""
    tags, opts = entry.tags, entry.options
    text = entry.type == "txt_pair"
    src = next((tags[k] for k in SOURCE_LANG_TAGS if tags.get(k) is not None), opts.get("source_language"))
    tgt = next((tags[k] for k in TARGET_LANG_TAGS if tags.get(k) is not None), opts.get("target_language"))
    task = tags.get("task")
    if task is None:
        task = "mt" if text else ("asr" if tgt is None or tgt == src else "st")
    task = TASK_ALIASES.get(str(task), str(task))
    audio = entry.type in ("nemo", "nemo_tarred")
    if task not in TASKS or (text and task != "mt") or (audio and task == "mt"):
        expected = "mt" if text else "st or asr" if audio else f"one of {', '.join(TASKS)}"
        raise ValueError(f"{entry.where}.tags.task: {tags.get('task')!r} does not fit a {entry.type!r} entry; "
                         f"expected {expected}")
    if task == "asr" and tgt is None:
        tgt = src
    for value, keys in ((src, SOURCE_LANG_TAGS), (tgt, TARGET_LANG_TAGS)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{entry.where}: no language for its examples; set tags.{keys[0]} (or "
                             f"{', '.join(keys[1:])}{', source_language/target_language' if text else ''})")
    return {"task": task, "source_lang": src, "target_lang": tgt, "dataset": str(tags.get("dataset", "default"))}


def entry_source(entry: InputEntry, path: str, names: set[str]) -> dict[str, Any]:
    """The source (a ``SourceSpec`` dict) of an entry whose examples are the Shar folder ``path``; its
    name is the entry's ``name`` or ``<dataset>.<task>_<src>-<tgt>`` (``#2``... when taken; ``names``
    holds those taken and is updated)."""
    fields_ = source_fields(entry)
    base = entry.name or f"{fields_['dataset']}.{fields_['task']}_{fields_['source_lang']}-{fields_['target_lang']}"
    if entry.name and base in names:
        raise ValueError(f"{entry.where}.name: {base!r} is the name of another entry; names must be unique")
    name, k = base, 2
    while name in names:
        name, k = f"{base}#{k}", k + 1
    names.add(name)
    return {"name": name, "path": path, **fields_, "weight": entry.weight}


def extra_tags(entry: InputEntry) -> dict[str, Any]:
    """Tags that are not task, languages or dataset: stored with each converted example (``cut.custom``)."""
    known = {"task", "dataset", *SOURCE_LANG_TAGS, *TARGET_LANG_TAGS}
    return {k: v for k, v in entry.tags.items() if k not in known}
