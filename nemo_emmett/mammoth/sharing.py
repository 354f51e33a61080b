"""MAMMOTH sharing patterns: which named component a task uses at each position (arXiv 2403.07544).

A component name is ``<kind>.<position>.<sharing_id>`` for layer stacks (``encoder.0.en``,
``decoder.1.full``) and ``<kind>.<sharing_id>`` for the single-slot kinds (``embed.de``,
``perception.full``, the adapters of a pretrained backbone ``encoder_adapter.en`` and
``decoder_adapter.de``, the pretrained backbone itself ``backbone.full``). The sharing id comes
from the pattern and the task's languages:

=============== ===================================================================
``FULL``        ``full``: one component for every task
``SRC_LANGUAGE`` the source language;  ``TGT_LANGUAGE``: the target language
``SRC_GROUP``   the source language's group;  ``TGT_GROUP``: the target's group
``LANGUAGE``    the source language on the encoder side, the target on the decoder side
``GROUP``       likewise with groups
=============== ===================================================================

Encoder-side kinds are ``encoder``, ``encoder_adapter`` and ``perception``; ``decoder`` and
``decoder_adapter`` are decoder-side; ``embed``
takes the side it is looked up for (the source embedding of a task is ``embed.<src id>``, its
target embedding ``embed.<tgt id>``, so one per-language table serves a language on both sides).
Target-specific encoder components (``TGT_LANGUAGE`` on the encoder) are allowed. A name is taken
apart in one place, :meth:`~nemo_emmett.mammoth.component.Component.parse`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from nemo_emmett.mammoth.component import SINGLE_KINDS, STACK_KINDS, component_name

PATTERNS = ("FULL", "SRC_GROUP", "TGT_GROUP", "GROUP", "SRC_LANGUAGE", "TGT_LANGUAGE", "LANGUAGE")
SIDES = ("encoder", "decoder")
FULL_ID = "full"
_ID = re.compile(r"[A-Za-z0-9_-]+")


def check_id(value: str, what: str) -> str:
    """Languages, group names and sharing ids become parts of dotted component names."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ValueError(f"{what} {value!r} must be letters, digits, '_' or '-' (it becomes part of a component "
                         "name such as encoder.0.<id>)")
    return value


def language_groups(groups: Mapping[str, Sequence[str]], languages: Sequence[str] | None = None) -> dict[str, str]:
    """``{group: [languages]}`` -> ``{language: group}``; a language in two groups is an error, and so is
    one outside ``languages`` (when given: a typo would silently make a one-language group)."""
    out: dict[str, str] = {}
    known = set(languages) if languages is not None else None
    for group, members in groups.items():
        check_id(group, "group name")
        if isinstance(members, str) or not members:
            raise ValueError(f"group {group!r}: expected a non-empty list of languages, got {members!r}")
        for lang in members:
            check_id(lang, f"group {group!r}: language")
            if known is not None and lang not in known:
                raise ValueError(f"group {group!r} lists language {lang!r}, which is not one of the languages "
                                 f"{sorted(known)}")
            if lang in out:
                raise ValueError(f"language {lang!r} is in two groups: {out[lang]!r} and {group!r}")
            out[lang] = group
    return out


def sharing_id(pattern: str, *, side: str, source_lang: str, target_lang: str,
               groups: Mapping[str, str] | None = None) -> str:
    """The sharing id of a component with ``pattern`` on ``side`` for the direction ``source_lang -> target_lang``;
    ``groups``: ``{language: group}`` (:func:`language_groups`), needed by the group patterns."""
    if pattern not in PATTERNS:
        raise ValueError(f"unknown sharing pattern {pattern!r}; expected one of {', '.join(PATTERNS)}")
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    if pattern == "FULL":
        return FULL_ID
    if pattern in ("LANGUAGE", "GROUP"):
        lang = source_lang if side == "encoder" else target_lang
    else:
        lang = source_lang if pattern.startswith("SRC_") else target_lang
    if not pattern.endswith("GROUP"):
        return lang
    if groups is None or lang not in groups:
        raise ValueError(f"sharing pattern {pattern} needs a group for language {lang!r}; groups cover "
                         f"{sorted(groups or {})}")
    return groups[lang]


def stack_component(kind: str, position: int, pattern: str, *, source_lang: str, target_lang: str,
                    groups: Mapping[str, str] | None = None) -> str:
    """``encoder.<position>.<id>`` or ``decoder.<position>.<id>``."""
    if kind not in STACK_KINDS:
        raise ValueError(f"layer stack kind must be one of {STACK_KINDS}, got {kind!r}")
    sid = sharing_id(pattern, side=kind, source_lang=source_lang, target_lang=target_lang, groups=groups)
    return component_name(kind, position, sid)


def single_component(kind: str, pattern: str, *, side: str, source_lang: str, target_lang: str,
                     groups: Mapping[str, str] | None = None) -> str:
    """``embed.<id>`` (for ``side``), ``perception.<id>``, ``encoder_adapter.<id>``, ``decoder_adapter.<id>``."""
    if kind not in SINGLE_KINDS:
        raise ValueError(f"component kind must be one of {SINGLE_KINDS}, got {kind!r}")
    return component_name(kind, None, sharing_id(pattern, side=side, source_lang=source_lang,
                                                  target_lang=target_lang, groups=groups))

