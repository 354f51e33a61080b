"""MAMMOTH path templates: one pattern names the corpus files of many language pairs.

Variables, for a direction ``src -> tgt``:

* ``{src_lang}``, ``{tgt_lang}``: the two languages; ``{lang_pair}``: ``"src-tgt"``;
* ``{side_a}``, ``{side_b}``: the two languages sorted (``side_a < side_b``);
  ``{sorted_pair}``: ``"side_a-side_b"``.

Two corpus modes:

* ``directional``: every direction has its own files; the source template names the source
  file of ``src -> tgt`` and the target template its target file
  (``data/{lang_pair}/train.{src_lang}``, ``data/{lang_pair}/train.{tgt_lang}``). A multi-way
  corpus whose files are aligned across all languages is directional too:
  ``train.{src_lang}.gz`` and ``train.{tgt_lang}.gz``.
* ``symmetric``: one corpus per unordered pair serves both directions; the first template
  names the file of ``side_a``, the second the file of ``side_b``
  (``data/{sorted_pair}/train.{side_a}``, ``data/{sorted_pair}/train.{side_b}``). The source
  file of a direction is the file of the side equal to its source language.
"""

from __future__ import annotations

import itertools
import os
import re
import string
from collections.abc import Callable, Iterable
from typing import Literal

Mode = Literal["directional", "symmetric"]
MODES: tuple[str, ...] = ("directional", "symmetric")
VARIABLES: tuple[str, ...] = ("src_lang", "tgt_lang", "lang_pair", "sorted_pair", "side_a", "side_b")
# In symmetric mode one file serves both directions, so it cannot depend on which side is the source.
SYMMETRIC_VARIABLES: tuple[str, ...] = ("sorted_pair", "side_a", "side_b")

Pair = tuple[str, str]


def template_variables(src: str, tgt: str) -> dict[str, str]:
    """The value of every template variable for the direction ``src -> tgt``."""
    side_a, side_b = sorted((src, tgt))
    return {
        "src_lang": src,
        "tgt_lang": tgt,
        "lang_pair": f"{src}-{tgt}",
        "sorted_pair": f"{side_a}-{side_b}",
        "side_a": side_a,
        "side_b": side_b,
    }


def template_fields(template: str) -> list[str]:
    """The variable names a template uses, in order of appearance (``{{`` and ``}}`` are literal braces)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ValueError(f"Path template {template!r} is malformed ({e}); use variables like {{src_lang}}") from e
    return [field for _, field, _, _ in parsed if field is not None]


def check_template(template: str, allowed: Iterable[str] = VARIABLES) -> None:
    """Raise ``ValueError`` naming the template and its first variable outside ``allowed``."""
    allowed = tuple(allowed)
    for field in template_fields(template):
        if field not in allowed:
            shown = ", ".join("{" + v + "}" for v in allowed)
            raise ValueError(
                f"Path template {template!r} uses unknown variable {{{field}}}; allowed variables: {shown}"
            )


def expand_template(template: str, src: str, tgt: str) -> str:
    """The path that ``template`` names for the direction ``src -> tgt``."""
    check_template(template)
    return template.format_map(template_variables(src, tgt))


LANG_CODE = re.compile(r"^[a-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")
"""A language code: ISO 639 letters, optionally a script or region (``en``, ``pt_BR``, ``zh-Hant``,
``yue``); it becomes part of folder names, tags and prompts."""


def check_lang_code(value: object, what: str = "language code") -> str:
    """``value`` when it is a language code (:data:`LANG_CODE`), else an error naming it."""
    if not isinstance(value, str) or not LANG_CODE.match(value):
        raise ValueError(f"{what} {value!r} is not a language code: expected 2-3 lowercase ISO 639 letters, "
                         "optionally with a script or region (en, de, pt_BR, zh-Hant)")
    return value


def parse_pairs(text: str) -> list[Pair]:
    """``"en-de,en-fr"`` -> ``[("en", "de"), ("en", "fr")]``."""
    pairs = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        parts = item.split("-")
        if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
            raise ValueError(f"Language pair {item!r} is not of the form src-tgt with two different languages")
        pairs.append((check_lang_code(parts[0], f"language pair {item!r}: source"),
                      check_lang_code(parts[1], f"language pair {item!r}: target")))
    if not pairs:
        raise ValueError(f"No language pairs in {text!r}; expected e.g. en-de,en-fr")
    return pairs


def all_directions(langs: Iterable[str]) -> list[Pair]:
    """Every ordered pair of two different languages from ``langs``."""
    unique = list(dict.fromkeys(langs))
    return list(itertools.permutations(unique, 2))


def corpus_paths(src_template: str, tgt_template: str, pairs: Iterable[Pair], mode: Mode) -> dict[Pair, Pair]:
    """``{(src, tgt): (source_path, target_path)}`` for every direction in ``pairs``.

    In ``symmetric`` mode ``src_template`` names the ``side_a`` file and ``tgt_template`` the
    ``side_b`` file; a direction whose source is ``side_b`` reads them the other way round.
    """
    if mode not in MODES:
        raise ValueError(f"Corpus mode {mode!r} is not one of {MODES}")
    pairs = list(pairs)
    for src, tgt in pairs:
        check_lang_code(src, f"direction {src}-{tgt}: source")
        check_lang_code(tgt, f"direction {src}-{tgt}: target")
    allowed = VARIABLES if mode == "directional" else SYMMETRIC_VARIABLES
    for template in (src_template, tgt_template):
        try:
            check_template(template, allowed)
        except ValueError as e:
            if mode == "symmetric" and set(template_fields(template)) <= set(VARIABLES):
                raise ValueError(f"{e} (in symmetric mode a file serves both directions, so it cannot "
                                 f"depend on which side is the source; use directional mode for that)") from e
            raise
    paths: dict[Pair, Pair] = {}
    for src, tgt in pairs:
        src_path, tgt_path = expand_template(src_template, src, tgt), expand_template(tgt_template, src, tgt)
        if mode == "symmetric" and src > tgt:
            src_path, tgt_path = tgt_path, src_path
        if src_path == tgt_path:
            raise ValueError(f"Templates {src_template!r} and {tgt_template!r} give the same file {src_path!r} "
                             f"for both sides of {src}-{tgt}")
        paths[(src, tgt)] = (src_path, tgt_path)
    return paths


def discover_pairs(
    src_template: str,
    tgt_template: str,
    langs: Iterable[str],
    mode: Mode,
    exists: Callable[[str], bool] = os.path.isfile,
) -> list[Pair]:
    """The directions among all ordered pairs of ``langs`` whose two files both exist."""
    paths = corpus_paths(src_template, tgt_template, all_directions(langs), mode)
    return [pair for pair, (s, t) in paths.items() if exists(s) and exists(t)]
