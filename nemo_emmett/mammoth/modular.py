"""Modular multilingual translation (MAMMOTH): an encoder-decoder built from named, shared components.

Each task (``model.modular.tasks``) runs its own chain: the shared speech perception (audio tasks)
or its source embedding, then one encoder stack per position, then one decoder stack per position
over its target embedding, whose weights also score the output. Components are shared across
tasks by name (``mammoth/sharing.py``), one record each (``mammoth/component.py``). A batch may hold several tasks (an audio batch mixes ST and
ASR): its examples are routed by direction, and only the components of the tasks present run,
so the others get no gradient (``None``) and the optimizer leaves them and their state alone.

The encoder input is ``[speech ; prompt]`` (audio) or ``[prompt ; source]`` (text), as in SALM-T5,
plus sinusoidal positions; the decoder starts from the pad id, as T5 does.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from nemo_emmett.data.batch import TranslationBatch
from nemo_emmett.mammoth.component import Component
from nemo_emmett.mammoth.components import ComponentBank, component_path
from nemo_emmett.mammoth.routing import ModularTasks, restore_order
from nemo_emmett.mammoth.tasks import ModularModelConfig, ModularTaskConfig
from nemo_emmett.models.base import TranslationModel
from nemo_emmett.modules.transformer import KVCache, sinusoidal_positions
from nemo_emmett.parts.decoding import decode
from nemo_emmett.parts.sequence import concat_padded, lengths_to_mask

log = logging.getLogger(__name__)


class ModularTranslation(ModularTasks, TranslationModel):
    config_class = ModularModelConfig

    # ---- building ---------------------------------------------------------------------------
    def build_backbone(self) -> nn.Module:
        return ComponentBank(self.components.values(), self.cfg.modular, vocab_size=self.text.vocab_size,
                             pad_id=self.text.pad_id)

    @property
    def backbone_dim(self) -> int:
        return self.cfg.modular.d_model

    # ---- components -------------------------------------------------------------------------
    def component_prefix(self, component: Component) -> str:
        """The speech perception is the model's own ``perception``; the rest live in the bank."""
        return "perception." if component.kind == "perception" else f"backbone.{component_path(component.name)}."

    # ---- forward ----------------------------------------------------------------------------
    def _embed(self, name: str, ids: torch.Tensor) -> torch.Tensor:
        return self.backbone[name](ids) * math.sqrt(self.cfg.modular.d_model)  # (B, L) -> (B, L, D)

    @staticmethod
    def _add_positions(x: torch.Tensor, start: int = 0) -> torch.Tensor:
        pos = torch.arange(start, start + x.shape[1], device=x.device)
        return x + sinusoidal_positions(pos, x.shape[2]).to(x.dtype)[None]  # (B, L, D)

    def encode(self, batch: TranslationBatch, task: ModularTaskConfig,
               speech: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S, D) memory and its (B, S) mask for examples of one task."""
        prompt = (self._embed(task.source_embed, batch.prompt_ids), batch.prompt_lens)
        second = speech if speech is not None else (self._embed(task.source_embed, batch.source_ids),
                                                    batch.source_lens)
        parts = [second, prompt] if speech is not None else [prompt, second]
        x, lens = concat_padded(parts)
        mask = lengths_to_mask(lens, x.shape[1])
        x = self._add_positions(x)
        for name in task.encoder:
            x = self.backbone[name](x, mask)
        return x, mask

    def decode_states(self, task: ModularTaskConfig, tokens: torch.Tensor, memory: torch.Tensor,
                      memory_mask: torch.Tensor, cache: KVCache | None = None, start: int = 0) -> torch.Tensor:
        """(B, U) decoder input ids -> (B, U, V) scores over the task's target vocabulary (tied weights)."""
        x = self._add_positions(self._embed(task.target_embed, tokens), start)
        first = 0
        for name in task.decoder:
            stack = self.backbone[name]
            x = stack(x, memory_mask, memory, cache, first)
            first += len(stack.layers)
        return x @ self.backbone[task.target_embed].weight.T  # (B, U, D) @ (D, V)

    def _speech(self, batch: TranslationBatch) -> tuple[tuple[torch.Tensor, torch.Tensor] | None, dict]:
        if batch.modality != "audio":
            return None, {}
        emb, lens, aux = self.speech_embeddings(batch)
        return (emb, lens), aux

    def logits(self, batch: TranslationBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        speech, aux = self._speech(batch)  # the perception is shared: once for the whole batch
        targets = batch.target_ids  # (B, U)
        start = torch.full_like(targets[:, :1], self.text.pad_id)
        decoder_in = torch.cat([start, targets[:, :-1]], dim=1)  # (B, U): shifted right
        groups = self.task_groups(batch)
        pieces, order = [], []
        for task, idx in groups:
            one = len(groups) == 1
            sub = batch if one else batch.take_rows(idx)
            sub_speech = None if speech is None else speech if one else (speech[0][idx], speech[1][idx])
            memory, mask = self.encode(sub, task, sub_speech)
            pieces.append(self.decode_states(task, decoder_in if one else decoder_in[idx], memory, mask))
            order.append(idx)
        return restore_order(pieces, order), aux  # (B, U, V) in the batch's order

    @torch.no_grad()
    def generate_ids(self, batch: TranslationBatch) -> list[list[int]]:
        speech, _ = self._speech(batch)
        d = self.cfg.decoding
        out: list[list[int] | None] = [None] * len(batch)
        for task, idx in self.task_groups(batch):
            sub = batch.take_rows(idx)
            memory, mask = self.encode(sub, task, None if speech is None else (speech[0][idx], speech[1][idx]))
            n_layers = sum(len(self.backbone[name].layers) for name in task.decoder)
            state = {"cache": KVCache([None] * n_layers, [None] * n_layers), "memory": memory, "mask": mask, "t": 0}

            def step(tokens: torch.Tensor, st: dict, task=task) -> tuple[torch.Tensor, dict]:
                scores = self.decode_states(task, tokens[:, None], st["memory"], st["mask"], st["cache"], st["t"])
                return scores[:, -1].float().log_softmax(-1), {**st, "t": st["t"] + 1}  # (N, V)

            def reorder(st: dict, rows: torch.Tensor) -> dict:
                return {**st, "cache": st["cache"].select(rows), "memory": st["memory"][rows], "mask": st["mask"][rows]}

            first = torch.full((len(idx),), self.text.pad_id, dtype=torch.long, device=memory.device)
            log_probs, state = step(first, state)
            ids = decode(step, reorder, log_probs, state, beam_size=d.beam_size, eos_id=self.text.eos_id,
                         max_new_tokens=d.max_new_tokens, length_penalty=d.length_penalty)
            for i, row in zip(idx.tolist(), ids):
                out[i] = row
        return out
