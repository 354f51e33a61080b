"""A model's Hugging Face backbone (LoRA merged) and its tokenizer as a ``save_pretrained`` folder."""

from __future__ import annotations

import copy
import logging
import os
import shutil
from pathlib import Path

from nemo_emmett.models.base import TranslationModel
from nemo_emmett.parts.hf_tokenizer import hf_tokenizer_from_spm
from nemo_emmett.parts.lora import has_lora

log = logging.getLogger(__name__)


def save_backbone_pretrained(model: TranslationModel, folder: str | Path, *, overwrite: bool = False) -> Path:
    """The model's Hugging Face backbone (LoRA merged) and its tokenizer as a ``save_pretrained`` folder,
    which another run loads as ``model.backbone.pretrained_path`` exactly as it would load t5-base: the
    foundation of stage 2 in ``recipes/forgetting.py``. A SentencePiece tokenizer is written as the
    Hugging Face tokenizer that gives the same ids (``parts/hf_tokenizer.py``). The speech perception
    and other non-backbone modules are not part of it. Written beside ``folder`` and renamed into place."""
    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise FileExistsError(f"{str(folder)!r} exists; give another folder or overwrite=True")
    if not hasattr(model.backbone, "save_pretrained"):
        raise TypeError(f"{type(model).__name__}'s backbone ({type(model.backbone).__name__}) is not a Hugging Face "
                        "model: only SALM-T5 and BESTOW-GPT backbones can be saved as a Hugging Face folder")
    if has_lora(model):  # merged on a copy: a plain Hugging Face model, no adapter modules left
        merged = copy.deepcopy(model).cpu()
        merged.merge_lora()
        backbone = merged.backbone
    else:
        backbone = model.backbone
    tokenizer = hf_tokenizer_from_spm(model.text.spm_path) if model.text.spm_path is not None else model.text.tok
    folder.parent.mkdir(parents=True, exist_ok=True)
    stage = folder.parent / f"{folder.name}.partial-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    backbone.save_pretrained(str(stage))
    tokenizer.save_pretrained(str(stage))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(stage, folder)
    log.info("Saved the %s backbone and its tokenizer (%d ids) to %s", type(backbone).__name__, len(tokenizer), folder)
    return folder
