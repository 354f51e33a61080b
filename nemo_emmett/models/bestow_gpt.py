"""BESTOW-GPT: the LLM's text input embeddings cross-attend to speech, then a decoder-only LLM
(GPT-2, Llama, Qwen2 ...) continues the sequence with the answer.

Sequence, per example (left-padded so that every answer starts at the same column)::

    [BOS ; prompt (target-language tag) ; source (text batches only)] [answer ...]

Audio batches pass the embeddings of every position, prompt and answer alike, through the speech
cross-attention (``modules/cross_attention.py``: causal over the text, reading the speech) before the
LLM; text batches skip it. The loss
covers the answer tokens only (``logits`` returns scores for ``batch.target_ids``). Decoding
runs the context once, then one token at a time with the LLM's KV cache (``parts/decoding.py``),
until the tokenizer's EOS or any EOS id of the LLM's ``generation_config``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from nemo_emmett.data.batch import FusedBatch, TranslationBatch, batch_parts
from nemo_emmett.models.base import TranslationModel
from nemo_emmett.models.config import BestowGptConfig
from nemo_emmett.modules.cross_attention import SpeechCrossAttention
from nemo_emmett.parts.decoding import decode
from nemo_emmett.parts.sequence import concat_padded, lengths_to_mask, right_align

Speech = tuple[torch.Tensor, torch.Tensor]
"""(B, T, D) speech embeddings and their (B,) lengths."""


@dataclass
class DecoderState:
    """What one decoding step needs, one row per hypothesis."""

    cache: Any
    """The LLM's past_key_values (a transformers ``Cache``)."""
    mask: torch.Tensor
    """(N, S) 1 on the positions seen so far that are not padding."""
    next_pos: torch.Tensor
    """(N,) position id of the next token."""
    speech: Speech | None
    cross_past: list[torch.Tensor] | None
    """Per cross-attention layer, the (N, S, D) self-attention inputs of the positions so far (audio only)."""

    def select(self, index: torch.Tensor) -> DecoderState:
        """Rows ``index`` (N',) of everything; the LLM cache is reordered in place."""
        self.cache.reorder_cache(index)
        if self.speech is None:
            return DecoderState(self.cache, self.mask[index], self.next_pos[index], None, None)
        return DecoderState(self.cache, self.mask[index], self.next_pos[index], (self.speech[0][index],
                            self.speech[1][index]), [p[index] for p in self.cross_past])


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """(B, L) positions counting valid tokens only, so left padding does not shift them."""
    return (mask.long().cumsum(dim=1) - 1).clamp(min=0)


class BestowGpt(TranslationModel):
    config_class = BestowGptConfig

    def build_backbone(self) -> torch.nn.Module:
        from transformers import AutoModelForCausalLM

        try:
            model = self.load_hf_backbone(AutoModelForCausalLM, bos_token_id=self.text.bos_id)
        except ValueError as e:
            if "Unrecognized configuration class" not in str(e):
                raise
            raise ValueError(f"BESTOW-GPT needs a decoder-only causal LM backbone (GPT-2, Llama, Qwen2 ...): {e}") from e
        if model.config.is_encoder_decoder:
            raise ValueError(f"BESTOW-GPT needs a decoder-only backbone; {type(model).__name__} is an "
                             "encoder-decoder model (use SALM-T5 for those)")
        # The family's own module, built here so that LoRA and freezing (in __init__) see it.
        self.cross_attention = SpeechCrossAttention.from_config(self.cfg.cross_attention,
                                                                model.get_input_embeddings().embedding_dim)
        return model

    # ---- inputs ------------------------------------------------------------------------------
    def context_ids(self, batch: TranslationBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C) left-padded ids of [BOS ; prompt ; source (text batches)] and their (B, C) bool mask."""
        prompt, prompt_lens = batch.prompt_ids, batch.prompt_lens
        B = prompt.shape[0]
        parts = [(prompt.new_full((B, 1), self.text.bos_id), prompt_lens.new_ones(B)), (prompt, prompt_lens)]
        if batch.modality == "text":
            parts.append((batch.source_ids, batch.source_lens))
        ids, lens = concat_padded([(x[..., None], n) for x, n in parts])  # (B, C, 1), (B,)
        ids = right_align(ids, lens)[..., 0]  # (B, C)
        return ids, lengths_to_mask(lens, ids.shape[1]).flip(1)

    def speech(self, batch: TranslationBatch) -> tuple[Speech | None, dict[str, torch.Tensor]]:
        """Speech embeddings of an audio batch (None for text) and the auxiliary losses."""
        if batch.modality != "audio":
            return None, {}
        emb, lens, aux = self.speech_embeddings(batch)
        return (emb, lens), aux

    def input_embeddings(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, speech: Speech | None,
                         past: DecoderState | None = None) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """(B, L) ids with their (B, L) mask and position ids -> (B, L, D) LLM input embeddings; with
        speech, each position has read from it (after ``past``'s positions, when decoding), and the
        cross-attention's per-layer inputs to keep for the next positions."""
        x = self.embed(ids)  # (B, L, D), in the backbone's dtype (model.backbone.dtype)
        if speech is None:
            return x, None
        x, cross_past = self.cross_attention(x.to(speech[0].dtype), *speech, text_mask=mask.bool(),
                                             positions=positions, past=None if past is None else past.cross_past,
                                             past_mask=None if past is None else past.mask.bool())
        return x.to(self.backbone.dtype), cross_past  # the glue computes in the perception's dtype

    # ---- hooks -------------------------------------------------------------------------------
    def logits(self, batch: TranslationBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ctx, ctx_mask = self.context_ids(batch)  # (B, C)
        targets, target_lens = batch.target_ids, batch.target_lens  # (B, U), (B,)
        U = targets.shape[1]
        ids = torch.cat([ctx, targets[:, :-1]], dim=1)  # (B, C + U - 1): teacher forcing
        mask = torch.cat([ctx_mask, lengths_to_mask(target_lens - 1, U - 1)], dim=1)  # (B, C + U - 1)
        speech, aux = self.speech(batch)
        pos = position_ids(mask)
        x, _ = self.input_embeddings(ids, mask, pos, speech)
        out = self.backbone(inputs_embeds=x, attention_mask=mask.long(), position_ids=pos, use_cache=False,
                            logits_to_keep=U)
        return out.logits.float(), aux  # (B, U, V): the last context position predicts the first answer token

    def training_step(self, batch: TranslationBatch | FusedBatch, batch_idx: int) -> torch.Tensor:
        text = any(b.modality == "text" for b in batch_parts(batch))
        if text and not any(p.requires_grad for p in self.backbone.parameters()):
            # Text skips the cross-attention and the speech encoder: nothing would learn from it.
            raise ValueError("BESTOW-GPT got a text batch but its LLM is frozen without LoRA, so nothing trains on "
                             "text: set model.lora (adapters train), unfreeze part of the backbone (model.freeze), "
                             "or train on speech sources only")
        return super().training_step(batch, batch_idx)

    def generate_ids(self, batch: TranslationBatch) -> list[list[int]]:
        ctx, mask = self.context_ids(batch)  # (B, C)
        speech = None
        if batch.modality == "audio":
            p = self.perception(batch.audio, batch.audio_lens)
            speech = (p.embeddings, p.lengths)
        mask, pos = mask.long(), position_ids(mask)
        x, cross_past = self.input_embeddings(ctx, mask, pos, speech)
        out = self.backbone(inputs_embeds=x, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
        state = DecoderState(out.past_key_values, mask, mask.sum(dim=1), speech, cross_past)
        d = self.cfg.decoding
        return decode(self._step, DecoderState.select, out.logits[:, -1].float().log_softmax(-1), state,
                      beam_size=d.beam_size, eos_id=self.eos_ids(), max_new_tokens=d.max_new_tokens,
                      length_penalty=d.length_penalty)

    def eos_ids(self) -> list[int]:
        """Where an answer ends: the tokenizer's EOS and the backbone's ``generation_config.eos_token_id``
        (an int or a list: Llama 3 and Qwen2 chat models end a turn at ``<|eot_id|>`` / ``<|im_end|>``)."""
        gen = getattr(self.backbone, "generation_config", None)
        extra = None if gen is None else gen.eos_token_id
        extra = [] if extra is None else [extra] if isinstance(extra, int) else list(extra)
        return list(dict.fromkeys([self.text.eos_id, *extra]))

    def _step(self, tokens: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
        """One token per row (N,) through the cross-attention and the LLM with its cache -> (N, V) log-probs."""
        new = state.mask.new_ones(len(tokens), 1)  # (N, 1)
        pos = state.next_pos[:, None]  # (N, 1)
        x, cross_past = self.input_embeddings(tokens[:, None], new, pos, state.speech, past=state)
        mask = torch.cat([state.mask, new], dim=1)  # (N, S + 1)
        out = self.backbone(inputs_embeds=x, attention_mask=mask, position_ids=pos, past_key_values=state.cache,
                            use_cache=True)
        state = replace(state, cache=out.past_key_values, mask=mask, next_pos=state.next_pos + 1, cross_past=cross_past)
        return out.logits[:, -1].float().log_softmax(-1), state
