"""The two kinds of training example and the few accessors every later stage uses.

* Audio (speech translation, ASR): a lhotse ``Cut`` whose first supervision holds the source
  transcript and source language; ``target_text``, ``target_lang``, ``task`` and ``dataset``
  ride along as custom fields (``cut.custom``).
* Text (MT): a lhotse ``TextPairExample``; its ``custom`` holds ``id``, ``source_lang``,
  ``target_lang``, ``task`` and ``dataset``.

Everything downstream (multiplexer, bucketing, dataset) reads examples only through the
functions below, so it never needs to know which kind it holds beyond ``is_audio``.
"""

from __future__ import annotations

from typing import Any

from lhotse import MonoCut, Recording, SupervisionSegment
from lhotse.cut import Cut
from lhotse.cut.text import TextExample, TextPairExample
from lhotse.utils import fastcopy

from nemo_emmett.parts.subword_sampling import SubwordSampling

Example = Cut | TextPairExample

TASKS = ("st", "asr", "mt")
AUDIO_TASKS = ("st", "asr")


def make_audio_example(
    *,
    recording: Recording,
    transcript: str,
    source_lang: str,
    target_text: str,
    target_lang: str,
    task: str,
    dataset: str,
    cut_id: str | None = None,
) -> MonoCut:
    """An ST or ASR example spanning the whole recording (for ASR ``target_text == transcript``)."""
    _check_task(task, AUDIO_TASKS)
    cut_id = cut_id or recording.id
    sup = SupervisionSegment(
        id=cut_id,
        recording_id=recording.id,
        start=0.0,
        duration=recording.duration,
        channel=recording.channel_ids[0],
        text=transcript,
        language=source_lang,
    )
    return MonoCut(
        id=cut_id,
        start=0.0,
        duration=recording.duration,
        channel=recording.channel_ids[0],
        recording=recording,
        supervisions=[sup],
        custom={"target_text": target_text, "target_lang": target_lang, "task": task, "dataset": dataset},
    )


def make_text_example(
    *,
    example_id: str,
    source_text: str,
    target_text: str,
    source_lang: str,
    target_lang: str,
    dataset: str,
    task: str = "mt",
) -> TextPairExample:
    _check_task(task, ("mt",))
    return TextPairExample(
        source=TextExample(source_text),
        target=TextExample(target_text),
        custom={
            "id": example_id,
            "source_lang": source_lang,
            "target_lang": target_lang,
            "task": task,
            "dataset": dataset,
        },
    )


def text_example_to_dict(ex: TextPairExample) -> dict[str, Any]:
    """The jsonl record of a text example in a text Shar shard."""
    return {"source": ex.source.text, "target": ex.target.text, **ex.custom}


def text_example_from_dict(d: dict[str, Any], where: str = "") -> TextPairExample:
    missing = [k for k in ("id", "source", "target", "source_lang", "target_lang", "dataset") if k not in d]
    if missing:
        raise ValueError(f"{where}: text example lacks field(s) {missing}; expected keys id, source, target, "
                         f"source_lang, target_lang, dataset (and optionally task)")
    return make_text_example(
        example_id=d["id"],
        source_text=d["source"],
        target_text=d["target"],
        source_lang=d["source_lang"],
        target_lang=d["target_lang"],
        dataset=d["dataset"],
        task=d.get("task", "mt"),
    )


def is_audio(ex: Example) -> bool:
    return isinstance(ex, Cut)


def example_id(ex: Example) -> str:
    return ex.id if isinstance(ex, Cut) else ex.custom["id"]


def source_text(ex: Example) -> str:
    return ex.supervisions[0].text if isinstance(ex, Cut) else ex.source.text


def source_lang(ex: Example) -> str:
    return ex.supervisions[0].language if isinstance(ex, Cut) else ex.custom["source_lang"]


def target_text(ex: Example) -> str:
    return ex.custom["target_text"] if isinstance(ex, Cut) else ex.target.text


def target_lang(ex: Example) -> str:
    return ex.custom["target_lang"]


def task(ex: Example) -> str:
    return ex.custom["task"]


def dataset(ex: Example) -> str:
    return ex.custom["dataset"]


SUBWORD_SAMPLING = "subword_sampling"
"""The custom field of a drawn training example that says how to sample its segmentation (``data/subword.py``)."""


def subword_sampling(ex: Example) -> SubwordSampling | None:
    """How this example's texts are to be segmented: sampled (set by the ``subword_sampling`` transform), or None: the best."""
    return (ex.custom or {}).get(SUBWORD_SAMPLING)


def with_subword_sampling(ex: Example, sampling: SubwordSampling) -> Example:
    """A copy of ``ex`` that carries ``sampling`` (the input is not edited)."""
    custom = {**(ex.custom or {}), SUBWORD_SAMPLING: sampling}
    if isinstance(ex, Cut):
        return fastcopy(ex, custom=custom)
    return TextPairExample(source=ex.source, target=ex.target, custom=custom)


def direction(ex: Example) -> str:
    """``"<task>:<src>-<tgt>"``, the key under which metrics and losses are reported."""
    return direction_key(task(ex), source_lang(ex), target_lang(ex))


def direction_key(task: str, source_lang: str, target_lang: str) -> str:
    """``("mt", "en", "de")`` -> ``"mt:en-de"``: the one spelling of a direction, shared by data sources,
    modular task tables, prompts, validation metrics and ``restore_model(directions=...)``. It lives
    here, at the bottom of the data path, so that data, models and MAMMOTH all build it alike."""
    return f"{task}:{source_lang}-{target_lang}"


def parse_direction(key: str) -> tuple[str, str, str]:
    """``"mt:en-de"`` -> ``("mt", "en", "de")``, the inverse of :func:`direction_key`. A language with a
    ``-`` in it (``zh-Hans``) makes the key ambiguous: such a key is an error, not a guess."""
    task_, sep, pair = key.partition(":") if isinstance(key, str) else ("", "", "")
    src, dash, tgt = pair.partition("-")
    if not (task_ and sep and src and dash and tgt) or "-" in tgt or ":" in pair:
        raise ValueError(f"direction {key!r} is not of the form <task>:<source_lang>-<target_lang> (e.g. mt:en-de), "
                         "with no '-' or ':' inside a language")
    return task_, src, tgt


def _check_task(task: str, allowed: tuple[str, ...]) -> None:
    if task not in allowed:
        raise ValueError(f"task {task!r} is not one of {allowed}")
