"""What every translation model family shares: text handling, perception, the loss per task,
validation with BLEU/chrF per direction, optimizer set-up, freezing and LoRA.

A family implements three hooks: ``build_backbone`` (its modules), ``logits`` (teacher-forced
scores aligned with ``batch["target_ids"]``) and ``generate_ids`` (decoding)."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig, OmegaConf

from nemo_emmett.models.config import ModelConfig, parse_model_config
from nemo_emmett.modules.perception import AudioPerception, build_perception
from nemo_emmett.parts.freeze import freeze_by_regex, trainable_summary
from nemo_emmett.parts.lora import apply_lora
from nemo_emmett.parts.loss import loss_by_task, per_example_nll
from nemo_emmett.parts.metrics import ScoreAccumulator
from nemo_emmett.parts.optim import build_optimizer_and_scheduler
from nemo_emmett.parts.text_processor import TextProcessor

log = logging.getLogger(__name__)


class TranslationModel(pl.LightningModule, ABC):
    config_class: type[ModelConfig] = ModelConfig

    def __init__(self, cfg: DictConfig | dict[str, Any]):
        super().__init__()
        plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
        self.save_hyperparameters({"cfg": plain})
        self.cfg = parse_model_config(plain, self.config_class)
        self.text = self._build_text_processor()
        self.backbone = self.build_backbone()
        self.perception: AudioPerception = build_perception(self.cfg.perception, self.backbone_dim,
                                                            self.text.vocab_size)
        if self.cfg.lora is not None:
            lc = self.cfg.lora
            apply_lora(self, lc.targets, r=lc.r, alpha=lc.alpha, dropout=lc.dropout)
        freeze_by_regex(self, self.cfg.freeze)
        log.info("%s: %s", type(self).__name__, trainable_summary(self))
        self.scores = ScoreAccumulator()

    # ---- family hooks -----------------------------------------------------------------------
    @abstractmethod
    def build_backbone(self) -> torch.nn.Module: ...

    @property
    @abstractmethod
    def backbone_dim(self) -> int:
        """Width of the backbone's input embeddings (the perception projects to it)."""

    @abstractmethod
    def logits(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(B, U, V) scores for ``batch["target_ids"]`` (B, U) under teacher forcing, and the
        auxiliary losses of the forward pass (those of :meth:`speech_embeddings`)."""

    @abstractmethod
    def generate_ids(self, batch: dict[str, Any]) -> list[list[int]]:
        """Decoded token ids per example, without start and EOS tokens."""

    # ---- shared ------------------------------------------------------------------------------
    def _build_text_processor(self) -> TextProcessor:
        t = self.cfg.tokenizer
        if t.spm_path is not None:
            return TextProcessor(spm_path=t.spm_path, prompt_template=t.prompt_template)
        hf = t.hf_path or self.cfg.backbone.pretrained_path
        if hf is None:
            raise ValueError("model.tokenizer: give spm_path (SentencePiece .model) or hf_path, or a "
                             "backbone.pretrained_path whose folder holds its tokenizer")
        return TextProcessor(hf_path=hf, prompt_template=t.prompt_template)

    def speech_embeddings(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(B, T, D_backbone) speech embeddings, (B,) lengths, and auxiliary losses of an audio batch
        (``ctc``: the encoder against the source transcript, when enabled and transcripts are given)."""
        out = self.perception(batch["audio"], batch["audio_lens"])
        aux = {}
        if self.perception.ctc_head is not None and "transcript_ids" in batch:
            aux["ctc"] = self.perception.ctc_loss(out, batch["transcript_ids"], batch["transcript_lens"])
        return out.embeddings, out.lengths, aux

    def task_losses(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss of the batch (token-averaged NLL plus weighted auxiliary losses), and the
        NLL of each task in it together with each auxiliary loss, for logging."""
        logits, aux = self.logits(batch)
        losses, counts = per_example_nll(logits, batch["target_ids"], batch["target_lens"], self.cfg.label_smoothing)
        loss = losses.sum() / counts.sum().clamp(min=1)
        parts = loss_by_task(losses, counts, batch["tasks"])
        if "ctc" in aux:
            loss = loss + self.cfg.perception.ctc_weight * aux["ctc"]
        return loss, {**parts, **aux}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, per_task = self.task_losses(batch)
        n = len(batch["ids"])
        self.log("train_loss", loss, prog_bar=True, batch_size=n)
        for task, value in per_task.items():
            self.log(f"train_loss/{task}", value, batch_size=n)
        self.log(f"batch_size/{batch['modality']}", float(n), batch_size=n)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss, per_task = self.task_losses(batch)
        n = len(batch["ids"])
        self.log("val_loss", loss, prog_bar=True, batch_size=n, sync_dist=True)
        for task, value in per_task.items():
            self.log(f"val_loss/{task}", value, batch_size=n, sync_dist=True)
        hyps = self.translate_batch(batch)
        for task, src, tgt, hyp, ref in zip(batch["tasks"], batch["source_langs"], batch["target_langs"], hyps,
                                            batch["target_texts"]):
            self.scores.update(f"{task}:{src}-{tgt}", [hyp], [ref])

    def on_validation_epoch_end(self) -> None:
        scores = self.scores.compute()
        self.scores.reset()
        for k, v in scores.items():
            self.log(k, v, prog_bar=k == "bleu/avg", rank_zero_only=True)
        if scores and self.trainer.is_global_zero:
            log.info("validation: %s", ", ".join(f"{k}={v:.2f}" for k, v in sorted(scores.items())))

    @torch.no_grad()
    def translate_batch(self, batch: dict[str, Any]) -> list[str]:
        return [self.text.decode(ids) for ids in self.generate_ids(batch)]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning records the hyper-parameters but not the class; restoring tools need it.
        checkpoint["nemo_emmett_model_class"] = f"{type(self).__module__}.{type(self).__qualname__}"

    def configure_optimizers(self) -> Any:
        return build_optimizer_and_scheduler(self, self.cfg.optim)
