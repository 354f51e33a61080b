"""Cuts of a foreign Shar (written by lhotse or NeMo, without our fields) made our audio examples.

NeMo's and lhotse's Shar cuts keep the transcript in the first supervision and the translation, if any,
somewhere in ``cut.custom``; the task, the languages and the dataset come from the ``data.input_cfg``
entry's tags. :func:`tag_cut` sets them the way ``data/examples.py`` expects. It is the one rule for
both ways such a Shar reaches training: converted once into a cached folder (a local folder,
``data/prepare/nemo_inputs.py``) or streamed in place from its shard files or URLs, tagged as each cut
is read (``data/shard_list.py``, ``data/shar.py`` ``read_shard``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lhotse.cut import Cut

TARGET_TEXT_FIELDS = ("target_text", "answer")
"""Where an audio example's translation is looked for (``cut.custom``) when ``target_text_field`` is not given."""
READER_FIELDS = ("shard_origin", "shar_epoch")
"""What lhotse's Shar reader adds to ``cut.custom`` (where it read the cut): not the example's."""


@dataclass(frozen=True)
class Tagging:
    """What a foreign cut becomes: the entry's direction and dataset, its other tags, where its translation is."""

    task: str
    source_lang: str
    target_lang: str
    dataset: str
    extra: dict[str, Any] = field(default_factory=dict)
    """Tags that are not task, languages or dataset: set in each example's ``cut.custom``."""
    target_key: str | None = None
    """The ``cut.custom`` field of the translation (``target_text_field``); None: ``TARGET_TEXT_FIELDS``."""

    @property
    def target_keys(self) -> tuple[str, ...]:
        return (self.target_key,) if self.target_key else TARGET_TEXT_FIELDS


def tag_cut(cut: Cut, tagging: Tagging, example_id: str, where: str) -> Cut | None:
    """``cut`` as our example with id ``example_id`` (its own id kept as ``custom['source_id']``), or None
    when it has no text to train on (no supervision, an empty transcript or translation). An ST cut
    without any translation field is an error naming ``where`` and the fields it has."""
    custom = {k: str(v) if isinstance(v, Path) else v for k, v in (cut.custom or {}).items() if k not in READER_FIELDS}
    keys = tagging.target_keys
    sup = cut.supervisions[0] if cut.supervisions else None
    transcript = (sup.text or "").strip() if sup is not None else ""
    if tagging.task == "st" and not any(t in custom for t in keys):
        raise ValueError(f"{where}: example {cut.id!r} has no translation: none of the fields {list(keys)} "
                         f"(found {sorted(custom)}); set the entry's target_text_field")
    target = transcript if tagging.task == "asr" else str(next((custom[t] for t in keys if t in custom), "")).strip()
    if sup is None or not transcript or not target:
        return None
    sup.text, sup.language = transcript, tagging.source_lang
    cut.custom = {**custom, **tagging.extra, "source_id": cut.id, "target_text": target,
                  "target_lang": tagging.target_lang, "task": tagging.task, "dataset": tagging.dataset}
    cut.id = example_id
    return cut
