"""What every translation model family shares: text handling, perception, the loss per task,
validation with BLEU/chrF per direction, optimizer set-up, freezing (presets, regexes) and LoRA (peft).

A family implements three hooks: ``build_backbone`` (its modules), ``logits`` (teacher-forced
scores aligned with ``batch.target_ids``) and ``generate_ids`` (decoding); ``backbone_dim``
(the width the perception projects to) defaults to the backbone's input embedding width.

Every family saves and loads like the ecosystem: ``save_pretrained`` / ``from_pretrained`` (a Hugging
Face-style folder, ``models/pretrained.py``) and ``save_to`` / ``restore_from`` (that folder as one file,
``models/archive.py``); a modular family splits its weights by component (``split_weights``) and builds
only some directions (``restricted_config``)."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig, OmegaConf

from nemo_emmett.data.batch import FusedBatch, TranslationBatch, batch_parts
from nemo_emmett.data.examples import direction_key
from nemo_emmett.mgcm.step import MGCMStep
from nemo_emmett.models.archive import open_archive, save_archive
from nemo_emmett.models.config import ModelConfig, parse_model_config
from nemo_emmett.models.pretrained import load_saved, open_folder, save_folder
from nemo_emmett.modules.hf_backbone import (
    check_local_folder,
    check_vocab_fits,
    enable_gradient_checkpointing,
    load_hf_model,
    warn_low_precision_training,
)
from nemo_emmett.modules.perception import AudioPerception, build_perception
from nemo_emmett.parts.freeze import apply_finetune, check_finetune, freeze_by_regex, trainable_summary
from nemo_emmett.parts.lora import apply_lora, default_targets, merge_lora, upgrade_lora_keys
from nemo_emmett.parts.loss import BatchLoss, per_example_nll
from nemo_emmett.parts.metrics import MeanAccumulator, ScoreAccumulator
from nemo_emmett.parts.optim import build_optimizer_and_scheduler
from nemo_emmett.parts.text_processor import TextProcessor

log = logging.getLogger(__name__)


class TranslationModel(pl.LightningModule, ABC):
    config_class: type[ModelConfig] = ModelConfig

    def __init__(self, cfg: DictConfig | dict[str, Any], *, text: TextProcessor | None = None):
        """``text``: the run's tokenizer, resolved at start-up before the data module and the model
        (``nemo_emmett/startup.py``: both receive the same one); None: built from ``cfg.tokenizer``
        (restoring a checkpoint or an export)."""
        super().__init__()
        plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
        self.save_hyperparameters({"cfg": plain})
        self.cfg = parse_model_config(plain, self.config_class)
        self.check_config()
        check_finetune(self.cfg.finetune, has_lora=self.cfg.lora is not None)
        self.text = text if text is not None else self.build_text(self.cfg)
        self.backbone = self.build_backbone()
        self.perception: AudioPerception | None = (
            build_perception(self.cfg.perception, self.backbone_dim, self.text.vocab_size) if self.uses_audio else None)
        if self.cfg.lora is not None:
            lc = self.cfg.lora
            targets = lc.targets if lc.targets is not None else self.default_lora_targets()
            apply_lora(self, targets, r=lc.r, alpha=lc.alpha, dropout=lc.dropout)
        apply_finetune(self, self.cfg.finetune)
        if self.cfg.finetune == "full" and self.cfg.freeze and self.cfg.freeze == self.config_class().freeze:
            log.warning("model.finetune='full', but %s's default model.freeze %s applies after it: set "
                        "model.freeze=[] to train everything", type(self).__name__, self.cfg.freeze)
        freeze_by_regex(self, self.cfg.freeze)
        warn_low_precision_training(self)
        log.info("%s: %s", type(self).__name__, trainable_summary(self))
        # MGCM runs several backward passes per step: Lightning's manual optimization (mgcm/step.py)
        self.mgcm = (MGCMStep(self.cfg.mgcm, self.named_parameters(), components=self.mgcm_components())
                     if self.cfg.mgcm.enabled else None)
        self.automatic_optimization = self.mgcm is None
        self.scores = ScoreAccumulator()
        self.val_losses = MeanAccumulator()

    # ---- family hooks -----------------------------------------------------------------------
    @abstractmethod
    def build_backbone(self) -> torch.nn.Module: ...

    @property
    def backbone_dim(self) -> int:
        """Width of the backbone's input embeddings (the perception projects to it)."""
        return self.backbone.get_input_embeddings().embedding_dim

    @property
    def uses_audio(self) -> bool:
        """Whether the model has a speech perception (a text-only family or task table has none)."""
        return True

    def mgcm_components(self) -> dict[str, str] | None:
        """MGCM ``component`` granularity without ``mgcm.components``: {component: regex over parameter
        names} from the model's own named components (modular models); None: the config must give them."""
        return None

    def probe_direction(self, modality: str) -> tuple[str, str, str] | None:
        """(task, source_lang, target_lang) of the OOMptimizer's synthetic batches of ``modality``; None:
        any (every direction runs the same modules)."""
        return None

    @abstractmethod
    def logits(self, batch: TranslationBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(B, U, V) scores for ``batch.target_ids`` (B, U) under teacher forcing, and the
        auxiliary losses of the forward pass per example, (B,) each (those of :meth:`speech_embeddings`)."""

    @abstractmethod
    def generate_ids(self, batch: TranslationBatch) -> list[list[int]]:
        """Decoded token ids per example, without start and EOS tokens."""

    def default_lora_targets(self) -> list[str]:
        """``model.lora.targets`` when null: peft's default layers for the backbone's ``model_type``."""
        model_type = getattr(getattr(self.backbone, "config", None), "model_type", None)
        if model_type is None:
            raise ValueError(f"model.lora.targets is null and {type(self).__name__}'s backbone has no Hugging Face "
                             "model_type to take peft's defaults from: give model.lora.targets")
        return default_targets(model_type)

    def merge_lora(self) -> list[str]:
        """Merge the LoRA adapters into their base weights for inference (the same outputs in eval, no
        extra matmuls); the config then says no LoRA, so an export of the merged model restores as it is.
        Returns the merged layer names."""
        names = merge_lora(self)
        if names:
            self.cfg.lora = None
            if self.cfg.finetune == "lora":  # the same parameters train, without the adapters
                self.cfg.finetune = "backbone_frozen"
            self.hparams["cfg"] = {**self.hparams["cfg"], "lora": None, "finetune": self.cfg.finetune}
        return names

    def check_config(self) -> None:
        """Checks of the parsed config beyond its types, before anything is built (none by default)."""

    def split_weights(self, state: dict[str, torch.Tensor]
                      ) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        """``({component name: its entries}, the rest)`` of a state dict: what a saved model holds in a
        file per component (modular models) and in its main weights file. None by default: all the rest."""
        return {}, dict(state)

    @classmethod
    def restricted_config(cls, cfg: dict[str, Any], directions: list[str]) -> dict[str, Any]:
        """The config (plain, parsed from a saved model) of this model with only ``directions``' parts
        (``mt:en-de`` or task names); unchanged where every direction runs the whole model."""
        return cfg

    @classmethod
    def build_text(cls, cfg: ModelConfig) -> TextProcessor:
        """The tokenizer and prompts of a model with config ``cfg`` (parsed)."""
        t = cfg.tokenizer
        if t.spm_path is not None:
            return TextProcessor(spm_path=t.spm_path, prompt_template=t.prompt_template,
                                 language_codes=t.language_codes)
        hf = t.hf_path or cfg.backbone.pretrained_path
        if hf is None:
            raise ValueError("model.tokenizer: give spm_path (SentencePiece .model) or hf_path, or a "
                             "backbone.pretrained_path whose folder holds its tokenizer")
        return TextProcessor(hf_path=hf, prompt_template=t.prompt_template, language_codes=t.language_codes)

    # ---- shared ------------------------------------------------------------------------------

    def load_hf_backbone(self, auto_cls: Any, **overrides: Any) -> torch.nn.Module:
        """A Hugging Face model (``AutoModelForSeq2SeqLM``, ``AutoModelForCausalLM``) from
        ``backbone.pretrained_path``, or random-init from ``backbone.config`` with the tokenizer's
        vocabulary size and special ids (plus the family's ``overrides``), in ``backbone.dtype``, with
        activation checkpointing when ``backbone.gradient_checkpointing``. A pretrained folder must be
        complete and its embeddings must hold every id of the tokenizer (errors name both)."""
        b, t = self.cfg.backbone, self.text
        if b.pretrained_path is not None:
            check_local_folder(b.pretrained_path)
        fields = {"vocab_size": t.vocab_size, "pad_token_id": t.pad_id, "eos_token_id": t.eos_id, **overrides}
        model = load_hf_model(auto_cls, pretrained_path=b.pretrained_path, config=b.config, overrides=fields,
                              dtype=b.dtype)
        check_vocab_fits(model, vocab_size=t.vocab_size, tokenizer=t.spm_path or t.hf_path,
                         backbone=b.pretrained_path or f"random-init {b.config.get('model_type')}")
        if b.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        return model

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.backbone.get_input_embeddings()(ids)  # (B, L) -> (B, L, D)

    def speech_embeddings(self, batch: TranslationBatch) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(B, T, D_backbone) speech embeddings, (B,) lengths, and auxiliary losses of an audio batch per
        example, (B,) each (``ctc``: the encoder against the source transcript, when enabled and
        transcripts are given)."""
        if self.perception is None:
            raise ValueError("an audio batch reached a model without speech perception (no audio task)")
        out = self.perception(batch.audio, batch.audio_lens)
        aux = {}
        if self.perception.ctc_head is not None and batch.transcript_ids is not None:
            aux["ctc"] = self.perception.ctc_loss(out, batch.transcript_ids, batch.transcript_lens,
                                                  reduction="none")
        return out.embeddings, out.lengths, aux

    def batch_loss(self, batch: TranslationBatch | FusedBatch) -> BatchLoss:
        """The loss of the batch per example: the one place the training loss is defined. A fused step
        (``data.fusion: zip``) runs each of its batches through the model and joins their losses
        (:meth:`BatchLoss.concat`: as one batch of all their examples, token-averaged NLL)."""
        if isinstance(batch, FusedBatch):
            return BatchLoss.concat([self.batch_loss(b) for b in batch.parts])
        logits, aux = self.logits(batch)
        losses, counts = per_example_nll(logits, batch.target_ids, batch.target_lens, self.cfg.label_smoothing)
        return BatchLoss(losses, counts, batch.tasks, aux, {"ctc": self.cfg.perception.ctc_weight})

    def task_losses(self, batch: TranslationBatch | FusedBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss of the batch (token-averaged NLL plus weighted auxiliary losses), and the
        NLL of each task in it together with each auxiliary loss, for logging."""
        loss = self.batch_loss(batch)
        return loss.total(), loss.logged()

    def training_step(self, batch: TranslationBatch | FusedBatch, batch_idx: int) -> torch.Tensor:
        if self.mgcm is not None:  # manual optimization: per-task backward passes, projection, one step
            return self.mgcm.training_step(self, batch)
        loss, per_task = self.task_losses(batch)
        self.log_training(batch, loss, per_task)
        return loss

    def log_training(self, batch: TranslationBatch | FusedBatch, loss: torch.Tensor,
                     per_task: dict[str, torch.Tensor]) -> None:
        n = len(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=n)
        for task, value in per_task.items():
            self.log(f"train_loss/{task}", value, batch_size=n)
        for part in batch_parts(batch):
            self.log(f"batch_size/{part.modality}", float(len(part)), batch_size=len(part))

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.mgcm is not None:  # after the grad scaler unscaled the gradients: finiteness check, clipping
            self.mgcm.before_optimizer_step(self, optimizer)

    def validation_step(self, batch: TranslationBatch, batch_idx: int) -> None:
        loss, per_task = self.task_losses(batch)
        n = len(batch)
        for key, value in {"val_loss": loss, **{f"val_loss/{t}": v for t, v in per_task.items()}}.items():
            self.val_losses.update(key, float(value), n)  # reduced over ranks at the epoch's end
        hyps = self.translate_batch(batch)
        for (task, src, tgt), hyp, ref in zip(batch.directions, hyps, batch.target_texts):
            self.scores.update(direction_key(task, src, tgt), [hyp], [ref])

    def on_validation_epoch_end(self) -> None:
        losses = self.val_losses.compute()  # the same on every rank: log without sync_dist
        self.val_losses.reset()
        for k, v in losses.items():
            self.log(k, v, prog_bar=k == "val_loss")
        scores = self.scores.compute()
        self.scores.reset()
        for k, v in scores.items():
            self.log(k, v, prog_bar=k == "bleu/avg")  # gathered: the same on every rank
        if scores and self.trainer.is_global_zero:  # the scores with the sacrebleu signatures that made them
            from nemo_emmett.parts.metrics import scored_target_langs, signature_text

            log.info("validation: %s (%s)", ", ".join(f"{k}={v:.2f}" for k, v in sorted(scores.items())),
                     signature_text(scored_target_langs(scores)))

    @torch.no_grad()
    def translate_batch(self, batch: TranslationBatch) -> list[str]:
        return [self.text.decode(ids) for ids in self.generate_ids(batch)]

    def direction_scope(self, task: str, source_lang: str, target_lang: str) -> AbstractContextManager:
        """A block in which the model's modules run one direction when called outside ``logits`` /
        ``generate_ids`` (simultaneous decoding calls the encoder and decoder itself): nothing to set
        for a single model; a modular one routes to the direction's components."""
        return nullcontext()

    # ---- saving and loading like the ecosystem (models/pretrained.py, models/archive.py) --------
    def save_pretrained(self, save_directory: str | Path, *, token_equivalent_duration: float | None = None) -> Path:
        """The model as a Hugging Face-style folder: ``config.json``, ``model.safetensors``
        (``components/<name>.safetensors`` per component of a modular model), ``tokenizer/``,
        ``adapter/`` (LoRA, PEFT's format), ``generation_config.json``. Returns the folder."""
        return save_folder(self, save_directory, token_equivalent_duration=token_equivalent_duration)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, *, directions: list[str] | None = None,
                        map_location: str | torch.device = "cpu", merge_lora: bool = False) -> TranslationModel:
        """The model in a local folder written by :meth:`save_pretrained` (or an archive of one,
        :meth:`save_to`), on ``map_location``, in eval mode, strictly loaded; the class is the one
        ``config.json`` names (``cls`` or a subclass). Nothing is downloaded: a name that is not a local
        path is an error. ``directions`` (modular models): only those tasks' components are built and read."""
        path = Path(pretrained_model_name_or_path)
        if path.is_file():
            return cls.restore_from(path, directions=directions, map_location=map_location, merge_lora=merge_lora)
        return load_saved(open_folder(path), cls, directions=directions, map_location=map_location,
                          merge_lora=merge_lora)

    def save_to(self, save_path: str | Path, *, token_equivalent_duration: float | None = None) -> Path:
        """The :meth:`save_pretrained` folder as one uncompressed tar file, NeMo's ``.nemo`` idea (suffix
        ``.nemo`` by convention). Returns its path."""
        return save_archive(self, save_path, token_equivalent_duration=token_equivalent_duration)

    @classmethod
    def restore_from(cls, restore_path: str | Path, *, directions: list[str] | None = None,
                     map_location: str | torch.device = "cpu", merge_lora: bool = False) -> TranslationModel:
        """The model in an archive written by :meth:`save_to` (as :meth:`from_pretrained`); needs nothing
        but the file (the tokenizer goes to the cache, ``$NEMO_EMMETT_CACHE``)."""
        with open_archive(restore_path) as files:
            return load_saved(files, cls, directions=directions, map_location=map_location, merge_lora=merge_lora)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Checkpoints written before peft name LoRA weights as parts/lora.py's LoRALinear did.
        checkpoint["state_dict"] = upgrade_lora_keys(checkpoint["state_dict"])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning records the hyper-parameters but not the class; restoring tools need it.
        checkpoint["nemo_emmett_model_class"] = f"{type(self).__module__}.{type(self).__qualname__}"

    def configure_optimizers(self) -> Any:
        trainer = self._trainer  # None outside fit (tests, the OOMptimizer's probe); self.trainer would raise
        return build_optimizer_and_scheduler(self, self.cfg.optim,
                                             max_steps=trainer.max_steps if trainer is not None else None)
