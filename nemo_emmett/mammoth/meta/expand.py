"""MAMMOTH meta-config: a few lines about languages, corpora and sharing -> the complete Hydra config.

``examples/config_config.py`` reads a meta-config (:class:`MetaConfig`, ``mammoth/meta/schema.py``), expands it here with
:func:`expand`, and writes the explicit config (:func:`render_config`): ``data.train_sources`` and
``data.validation_sources`` with sizes and weights, and ``model.modular`` with one task per
direction, its named components (:mod:`nemo_emmett.mammoth.sharing`), prompt, the language groups
and a device allocation. Bitext corpora are prepared later by ``emmett-prepare bitext``
(:func:`prepare_script`) into ``<shar_root>/<corpus>/mt_<src>-<tgt>`` (validation:
``<shar_root>/<corpus>_val/...``), exactly the folders the config names. Relative paths are
relative to the working directory, as for ``emmett-prepare`` and ``examples/train.py``.

Every task is one corpus direction, named ``<task>_<src>-<tgt>``: two corpora giving the same
task is an error. A task whose weight is 0 (explicit ``weights``) is not trained but stays in the
model and in validation (zero-shot directions; its task says ``zero_shot: true``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nemo_emmett.data.examples import AUDIO_TASKS
from nemo_emmett.data.prepare.bitext import count_lines
from nemo_emmett.data.prepare.templates import (
    all_directions,
    check_template,
    corpus_paths,
    discover_pairs,
    expand_template,
)
from nemo_emmett.data.shar import count_examples
from nemo_emmett.data.sources import temperature_weights
from nemo_emmett.mammoth.meta.allocation import meta_allocation
from nemo_emmett.mammoth.meta.clusters import cluster_languages, read_distances
from nemo_emmett.mammoth.meta.schema import CorpusSpec, MetaConfig, SharingSpec
from nemo_emmett.mammoth.sharing import PATTERNS, check_id, language_groups, single_component, stack_component
from nemo_emmett.mammoth.tasks import ModularConfig, ModularTaskConfig, check_modular
from nemo_emmett.parts.text_processor import DEFAULT_PROMPT

TARGET_TAGS = ("auto", "always", "never")
TAG_PROMPT = DEFAULT_PROMPT  # the target-language tag
GROUP_PATTERNS = tuple(p for p in PATTERNS if p.endswith("GROUP"))
SHAR_ROOT = "${shar_root}"  # bitext folders are written under the config's shar_root, so it can be overridden
MODEL_CLASS = "nemo_emmett.mammoth.modular.ModularTranslation"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskData:
    """One task: a corpus direction, where its Shar is and how many examples it has."""

    name: str
    task: str
    source_lang: str
    target_lang: str
    corpus: str
    path: str
    """As the config writes it (bitext: under ``${shar_root}``)."""
    num_examples: int
    valid_path: str | None = None
    valid_dataset: str | None = None


@dataclass(frozen=True)
class PrepareCommand:
    args: list[str]
    """``emmett-prepare`` arguments."""
    folders: list[str]
    """The Shar folders it writes."""


@dataclass
class Expansion:
    meta: MetaConfig
    data: list[TaskData]
    weights: dict[str, float]
    """Normalised training weight per task (0: not trained)."""
    groups: dict[str, list[str]]
    tasks: list[ModularTaskConfig]
    devices: list[list[str]] | None
    prepare: list[PrepareCommand]
    languages_without_data: list[str] = dataclasses.field(default_factory=list)
    """Languages of ``languages`` no task uses (:func:`languages_without_data`, warned)."""


# ---- groups -----------------------------------------------------------------------------------
def resolve_groups(meta: MetaConfig) -> dict[str, list[str]]:
    """``groups`` as given (checked against ``languages``), clustered from ``distances``, or none."""
    if meta.groups is not None and (meta.distances is not None or meta.num_groups is not None):
        raise ValueError("give groups, or distances with num_groups, not both")
    if (meta.distances is None) != (meta.num_groups is None):
        raise ValueError("distances and num_groups go together: give both to cluster languages into groups")
    if meta.distances is not None:
        if isinstance(meta.num_groups, bool) or not isinstance(meta.num_groups, int):
            raise ValueError(f"num_groups must be an integer, got {meta.num_groups!r}")
        return cluster_languages(meta.languages, read_distances(meta.distances, meta.languages), meta.num_groups)
    if meta.groups is None:
        return {}
    if not isinstance(meta.groups, Mapping):
        raise ValueError(f"groups: expected a mapping {{group: [languages]}}, got {meta.groups!r}")
    covered = language_groups(meta.groups, meta.languages)
    missing = [lang for lang in meta.languages if lang not in covered]
    if missing:
        raise ValueError(f"groups leave language(s) {missing} without a group")
    return {g: list(m) for g, m in meta.groups.items()}


# ---- corpora ----------------------------------------------------------------------------------
def corpus_tasks(corpus: CorpusSpec, languages: Sequence[str], where: str) -> list[TaskData]:
    """The tasks of one corpus: its directions (discovered or checked), Shar paths and sizes."""
    pairs = None if corpus.pairs == "all" else [_pair(p, corpus.task, languages, where) for p in corpus.pairs]
    valid: dict[tuple[str, str], str] = {}
    if corpus.kind == "bitext":
        if pairs is None:
            pairs = _found(discover_pairs(corpus.src, corpus.tgt, languages, corpus.mode), languages, where)
        files = _existing_files(corpus.src, corpus.tgt, pairs, corpus.mode, where)
        sizes = {p: count_lines(files[p][0]) for p in pairs}
        train = {p: prepared_folder(corpus.name, *p) for p in pairs}
        valid_dataset = f"{corpus.name}_val"
        if corpus.valid_src is not None:
            _existing_files(corpus.valid_src, corpus.valid_tgt, pairs, corpus.mode, f"{where}: validation")
            valid = {p: prepared_folder(valid_dataset, *p) for p in pairs}
    else:
        for template in (corpus.path, corpus.valid_path):
            if template is not None:
                check_template(template)
        if pairs is None:
            candidates = [(lang, lang) for lang in languages] if corpus.task == "asr" else all_directions(languages)
            pairs = _found([p for p in candidates if Path(expand_template(corpus.path, *p)).is_dir()], languages, where)
        train = {p: expand_template(corpus.path, *p) for p in pairs}
        valid_dataset = corpus.name
        if corpus.valid_path is not None:
            valid = {p: expand_template(corpus.valid_path, *p) for p in pairs}
        for what, dirs in (("Shar folder", train), ("validation Shar folder", valid)):
            for (s, t), d in dirs.items():
                if not Path(d).is_dir():
                    raise FileNotFoundError(f"{where}: pair {s}-{t}: {what} {d!r} does not exist")
        sizes = {p: count_examples(train[p]) for p in pairs}
    return [TaskData(name=f"{corpus.task}_{s}-{t}", task=corpus.task, source_lang=s, target_lang=t,
                     corpus=corpus.name, path=train[(s, t)], num_examples=sizes[(s, t)],
                     valid_path=valid.get((s, t)), valid_dataset=valid_dataset if valid else None)
            for s, t in pairs]


def languages_without_data(meta: MetaConfig, data: Sequence[TaskData]) -> list[str]:
    """The languages of ``languages`` that are the source or target of no task, each warned with
    what every corpus searched: such a language is left out of the model (no component, no task),
    which ``pairs: all`` discovery would otherwise do without a word. Not an error: a meta-config may
    list more languages than one set of corpora has (groups and distances cover them all). A
    language named in an explicit ``pairs`` list is already an error when its files are missing."""
    used = {lang for d in data for lang in (d.source_lang, d.target_lang)}
    missing = [lang for lang in meta.languages if lang not in used]
    if missing:
        searched = "; ".join(f"corpora[{i}] ({c.name!r}, pairs: {c.pairs}): "
                             + (f"src {c.src!r}, tgt {c.tgt!r}" if c.kind == "bitext" else f"path {c.path!r}")
                             for i, c in enumerate(meta.corpora))
        log.warning("languages: %s have no data in any corpus and are left out of the model (no task uses them); "
                    "searched %s. Add their files (or folders), fix the templates, or remove them from languages",
                    missing, searched)
    return missing


def prepared_folder(dataset: str, src: str, tgt: str) -> str:
    """The folder ``emmett-prepare bitext --dataset <dataset> --out <shar_root>`` writes for ``src -> tgt``."""
    return f"{SHAR_ROOT}/{dataset}/mt_{src}-{tgt}"


def _found(pairs: list[tuple[str, str]], languages: Sequence[str], where: str) -> list[tuple[str, str]]:
    if not pairs:
        raise ValueError(f"{where}: pairs: all found no direction with data among languages {list(languages)}")
    return pairs


def _pair(text: Any, task: str, languages: Sequence[str], where: str) -> tuple[str, str]:
    parts = text.split("-") if isinstance(text, str) else []
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"{where}: pair {text!r} is not of the form src-tgt")
    s, t = parts
    outside = [lang for lang in (s, t) if lang not in languages]
    if outside:
        raise ValueError(f"{where}: pair {text!r} uses language(s) {outside} that are not in languages {list(languages)}")
    if (s == t) != (task == "asr"):
        raise ValueError(f"{where}: pair {text!r}: " + ("asr pairs are one language, e.g. en-en" if task == "asr"
                                                      else f"a {task} pair needs two different languages"))
    return s, t


def _existing_files(src: str, tgt: str, pairs: list[tuple[str, str]], mode: str,
                    where: str) -> dict[tuple[str, str], tuple[str, str]]:
    files = corpus_paths(src, tgt, pairs, mode)
    for (s, t), paths in files.items():
        for p in paths:
            if not Path(p).is_file():
                raise FileNotFoundError(f"{where}: pair {s}-{t}: file {p!r} does not exist")
    return files


# ---- weights, components, devices ---------------------------------------------------------------
def task_weights(meta: MetaConfig, data: Sequence[TaskData]) -> dict[str, float]:
    """Normalised training weight per task: from sizes and the temperature, or the explicit ``weights``."""
    names = [d.name for d in data]
    if meta.weights is not None:
        if meta.temperature is not None:
            raise ValueError("give temperature or weights, not both")
        if not isinstance(meta.weights, Mapping):
            raise ValueError(f"weights: expected a mapping {{task name: weight}}, got {meta.weights!r}")
        unknown = [k for k in meta.weights if k not in names]
        if unknown:
            raise ValueError(f"weights: unknown task {unknown[0]!r}; tasks are {names}")
        missing = [n for n in names if n not in meta.weights]
        if missing:
            raise ValueError(f"weights: no weight for task(s) {missing} (give 0 to validate a task without training it)")
        for n, w in meta.weights.items():
            if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w < 0:
                raise ValueError(f"weights: task {n!r}: weight must be a finite number >= 0, got {w!r}")
        total = float(sum(meta.weights.values()))
        if total == 0:
            raise ValueError(f"weights: all task weights are zero ({dict(meta.weights)}): nothing to train on")
        return {n: meta.weights[n] / total for n in names}
    empty = [d.name for d in data if d.num_examples < 1]
    if empty:
        raise ValueError(f"task(s) {empty} have no examples: temperature weighting needs at least one each")
    temperature = 1.0 if meta.temperature is None else meta.temperature
    return dict(zip(names, temperature_weights([d.num_examples for d in data], temperature)))


def check_sharing(sharing: SharingSpec, groups: Mapping[str, Sequence[str]]) -> None:
    """Patterns and layer counts, before any component is named."""
    slots = [(f"sharing.{side}[{i}]", s) for side in ("encoder", "decoder") for i, s in enumerate(getattr(sharing, side))]
    for where, stack in slots:
        if isinstance(stack.layers, bool) or not isinstance(stack.layers, int) or stack.layers < 1:
            raise ValueError(f"{where}.layers must be an integer >= 1 (every task has one stack per position), "
                             f"got {stack.layers!r}")
    for where, pattern in [(f"{w}.pattern", s.pattern) for w, s in slots] + [("sharing.embed", sharing.embed)]:
        if pattern not in PATTERNS:
            raise ValueError(f"{where}: unknown sharing pattern {pattern!r}; expected one of {', '.join(PATTERNS)}")
        if pattern in GROUP_PATTERNS and not groups:
            raise ValueError(f"{where}: pattern {pattern} needs language groups; give groups, or distances "
                             "with num_groups")


def task_components(d: TaskData, sharing: SharingSpec, lang_group: Mapping[str, str]) -> ModularTaskConfig:
    """The task's components per position from the sharing patterns (prompt filled in by :func:`prompts`)."""
    kw = {"source_lang": d.source_lang, "target_lang": d.target_lang, "groups": lang_group}
    return ModularTaskConfig(
        name=d.name, task=d.task, source_lang=d.source_lang, target_lang=d.target_lang,
        encoder=[stack_component("encoder", i, s.pattern, **kw) for i, s in enumerate(sharing.encoder)],
        decoder=[stack_component("decoder", i, s.pattern, **kw) for i, s in enumerate(sharing.decoder)],
        source_embed=single_component("embed", sharing.embed, side="encoder", **kw),
        target_embed=single_component("embed", sharing.embed, side="decoder", **kw),
        perception="perception.full" if d.task in AUDIO_TASKS else None,
    )


def prompts(tasks: Sequence[ModularTaskConfig], target_tags: str) -> list[str]:
    """Per task: ``<{target_lang}>`` or ``""``. ``auto`` tags a task when one of its decoder stacks also
    serves a task with another target language (a shared decoder must be told the language; a shared
    output vocabulary under target-specific stacks need not)."""
    if target_tags not in TARGET_TAGS:
        raise ValueError(f"target_tags {target_tags!r} is not one of {TARGET_TAGS}")
    if target_tags != "auto":
        return [TAG_PROMPT if target_tags == "always" else ""] * len(tasks)
    targets: dict[str, set[str]] = {}
    for t in tasks:
        for c in t.decoder:
            targets.setdefault(c, set()).add(t.target_lang)
    return [TAG_PROMPT if any(len(targets[c]) > 1 for c in t.decoder) else "" for t in tasks]


# ---- expansion and output ---------------------------------------------------------------------
def expand(meta: MetaConfig) -> Expansion:
    """Everything the generated config and the prepare script hold, checked."""
    languages = meta.languages
    for lang in languages:
        check_id(lang, "languages: language")
    if len(set(languages)) != len(languages):
        raise ValueError(f"languages: {languages} lists a language twice")
    groups = resolve_groups(meta)
    check_sharing(meta.sharing, groups)
    data: list[TaskData] = []
    source: dict[str, str] = {}
    for i, corpus in enumerate(meta.corpora):
        for d in corpus_tasks(corpus, languages, f"corpora[{i}] ({corpus.name!r})"):
            if d.name in source:
                raise ValueError(f"task {d.name!r} comes from corpora {source[d.name]!r} and {corpus.name!r}: "
                                 "duplicate task names; each direction and task has one corpus")
            source[d.name] = corpus.name
            data.append(d)
    unused = languages_without_data(meta, data)
    weights = task_weights(meta, data)
    _check_curriculum(meta.curriculum, weights)
    lang_group = language_groups(groups, languages) if groups else {}
    tasks = [task_components(d, meta.sharing, lang_group) for d in data]
    for t, prompt in zip(tasks, prompts(tasks, meta.target_tags)):
        t.prompt = prompt
        t.zero_shot = weights[t.name] == 0  # no training source is written for it (generated_config)
    devices = meta_allocation(meta, tasks, weights)
    modular = ModularConfig(encoder_layers=[s.layers for s in meta.sharing.encoder],
                            decoder_layers=[s.layers for s in meta.sharing.decoder],
                            tasks=tasks, groups=groups, devices=devices)
    check_modular(modular)
    return Expansion(meta, data, weights, groups, tasks, devices, prepare_commands(meta, data, weights), unused)


def _check_curriculum(curriculum: Any, weights: Mapping[str, float]) -> None:
    if not isinstance(curriculum, Mapping):
        raise ValueError(f"curriculum: expected a mapping {{task name: step}}, got {curriculum!r}")
    for name, step in curriculum.items():
        if name not in weights:
            raise ValueError(f"curriculum: unknown task {name!r}; tasks are {list(weights)}")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"curriculum: task {name!r}: step must be an integer >= 0, got {step!r}")
        if weights[name] == 0:
            raise ValueError(f"curriculum: task {name!r} has weight 0: it is never trained")
    trained = [n for n, w in weights.items() if w > 0]
    if trained and all(curriculum.get(n, 0) > 0 for n in trained):
        raise ValueError("curriculum: every trained task starts after step 0; at least one must start at 0")


def prepare_commands(meta: MetaConfig, data: Sequence[TaskData], weights: Mapping[str, float]) -> list[PrepareCommand]:
    """One ``emmett-prepare bitext`` per bitext corpus and split, for the directions the config reads
    (training: the trained tasks; validation: every task)."""
    out = []
    for corpus in meta.corpora:
        if corpus.kind != "bitext":
            continue
        mine = [d for d in data if d.corpus == corpus.name]
        splits = [(corpus.name, corpus.src, corpus.tgt, [(d, d.path) for d in mine if weights[d.name] > 0])]
        if corpus.valid_src is not None:
            splits.append((f"{corpus.name}_val", corpus.valid_src, corpus.valid_tgt, [(d, d.valid_path) for d in mine]))
        for dataset, src, tgt, folders in splits:
            if not folders:
                continue
            pairs = ",".join(f"{d.source_lang}-{d.target_lang}" for d, _ in folders)
            args = ["bitext", "--dataset", dataset, "--out", meta.shar_root, "--mode", corpus.mode, "--pairs", pairs,
                    "--src-template", src, "--tgt-template", tgt]
            if dataset != corpus.name and corpus.valid_max_lines is not None:
                args += ["--max-lines", str(corpus.valid_max_lines)]
            out.append(PrepareCommand(args, [p.replace(SHAR_ROOT, meta.shar_root) for _, p in folders]))
    return out


def generated_config(x: Expansion, search_path: str | None = None) -> dict[str, Any]:
    """The Hydra config as plain data: ``defaults: [<base>, _self_]`` plus every value written out."""
    meta = x.meta
    train, validation = [], []
    corpus_transforms = {c.name: c.transforms for c in meta.corpora if c.transforms is not None}
    for d in x.data:
        tags = {"task": d.task, "source_lang": d.source_lang, "target_lang": d.target_lang}
        if x.weights[d.name] > 0:
            own = {"transforms": corpus_transforms[d.corpus]} if d.corpus in corpus_transforms else {}
            train.append({"name": d.name, "path": d.path, **tags, "dataset": d.corpus, "num_examples": d.num_examples,
                          "weight": x.weights[d.name], "introduce_at_step": meta.curriculum.get(d.name, 0), **own})
        if d.valid_path is not None:
            validation.append({"name": f"val_{d.name}", "path": d.valid_path, **tags, "dataset": d.valid_dataset})
    sizes = {k: getattr(meta, k) for k in ("d_model", "n_heads", "d_ff", "dropout") if getattr(meta, k) is not None}
    modular = {**sizes, "encoder_layers": [s.layers for s in meta.sharing.encoder],
               "decoder_layers": [s.layers for s in meta.sharing.decoder], "groups": x.groups, "devices": x.devices,
               "tasks": [dataclasses.asdict(t) for t in x.tasks]}
    cfg: dict[str, Any] = {"defaults": [meta.base, "_self_"], "name": meta.name, "model_class": MODEL_CLASS,
                           "shar_root": meta.shar_root,
                           "data": {"demo": {"enabled": False}, "train_sources": train, "validation_sources": validation,
                                    **({"transforms": meta.transforms} if meta.transforms is not None else {})},
                           "model": {"modular": modular}}
    if search_path is not None:
        cfg["hydra"] = {"searchpath": [f"file://{search_path}"]}
    return cfg


def render_config(x: Expansion, *, header: Sequence[str] = (), search_path: str | None = None) -> str:
    body = yaml.safe_dump(generated_config(x, search_path), sort_keys=False, default_flow_style=None, width=110,
                          allow_unicode=True)
    return "".join(f"# {line}\n" for line in header) + body


def prepare_script(x: Expansion, *, header: Sequence[str] = ()) -> str:
    """A bash script running :func:`prepare_commands`; a split whose folders all exist is skipped, and
    the script's arguments (e.g. ``--overwrite``) go to every command."""
    lines = ["#!/usr/bin/env bash", *(f"# {h}" for h in header),
             "# A corpus split whose folders all exist is skipped; arguments (e.g. --overwrite) go to every command.",
             "set -euo pipefail", 'have() { for d in "$@"; do [ -d "$d" ] || return 1; done; }']
    for c in x.prepare:
        lines.append(f"have {' '.join(map(shlex.quote, c.folders))} || \\\n"
                     f"  emmett-prepare {' '.join(map(shlex.quote, c.args))} \"$@\"")
    if not x.prepare:
        lines.append("echo 'no bitext corpora to prepare'")
    return "\n".join(lines) + "\n"
