"""SALM-T5: speech embeddings and the prompt, side by side, as the input of a pretrained
encoder-decoder NMT backbone (T5, mT5, Marian, mBART-50, NLLB-200 / M2M100); text batches take the
plain text path.

Encoder input: text ``[prompt ; source ids]``, audio ``[speech ; prompt]`` (or the other order,
``audio_position``). With a language-code backbone (NLLB, mBART-50, M2M100) the default prompt is
empty, the source ids carry the source-language code as the tokenizer puts it, an audio prompt
starts with that code (beside the speech), and every target starts with the target-language code
(``parts/text_processor.py``). The decoder starts from the backbone's ``decoder_start_token_id``
(its ``generation_config``, else its config; a random-init backbone: pad), then the target ids
under teacher forcing; decoding feeds ``[start, target-language code]`` per row (a batch may mix
target languages) and stops at any of the backbone's EOS ids."""

from __future__ import annotations

import torch

from nemo_emmett.data.batch import TranslationBatch
from nemo_emmett.models.base import TranslationModel
from nemo_emmett.models.config import SalmT5Config
from nemo_emmett.parts.decoding import strip_eos
from nemo_emmett.parts.sequence import concat_padded, lengths_to_mask

AUDIO_POSITIONS = ("before_prompt", "after_prompt")


class SalmT5(TranslationModel):
    config_class = SalmT5Config

    def build_backbone(self) -> torch.nn.Module:
        from transformers import AutoModelForSeq2SeqLM

        if self.cfg.audio_position not in AUDIO_POSITIONS:
            raise ValueError(f"model.audio_position must be one of {AUDIO_POSITIONS}, got {self.cfg.audio_position!r}")
        model = self.load_hf_backbone(AutoModelForSeq2SeqLM, decoder_start_token_id=self.text.pad_id)
        if model.config.is_encoder_decoder is not True:
            raise ValueError(f"SALM-T5 needs an encoder-decoder backbone; {type(model).__name__} is not one")
        return model

    def encoder_inputs(self, batch: TranslationBatch) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(B, S, D) encoder input embeddings, their (B, S) mask, and auxiliary losses."""
        prompt = (self.embed(batch.prompt_ids), batch.prompt_lens)
        aux: dict[str, torch.Tensor] = {}
        if batch.modality == "audio":
            *speech, aux = self.speech_embeddings(batch)
            parts = [speech, prompt] if self.cfg.audio_position == "before_prompt" else [prompt, speech]
        else:
            parts = [prompt, (self.embed(batch.source_ids), batch.source_lens)]
        x, lens = concat_padded(parts)
        return x, lengths_to_mask(lens, x.shape[1]), aux

    @property
    def decoder_start_id(self) -> int:
        """The backbone's decoder start: its generation config's, else its config's (set to pad for a
        random-init backbone)."""
        start = self.backbone.generation_config.decoder_start_token_id
        return self.backbone.config.decoder_start_token_id if start is None else start

    @property
    def eos_ids(self) -> list[int]:
        """Every id that ends a hypothesis: the backbone's generation EOS ids (one or a list) and the tokenizer's."""
        eos = self.backbone.generation_config.eos_token_id
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        return sorted({*eos, self.text.eos_id})

    def logits(self, batch: TranslationBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, mask, aux = self.encoder_inputs(batch)
        targets = batch.target_ids  # (B, U)
        start = torch.full_like(targets[:, :1], self.decoder_start_id)
        decoder_in = torch.cat([start, targets[:, :-1]], dim=1)  # (B, U): shifted right
        out = self.backbone(inputs_embeds=x.to(self.backbone.dtype), attention_mask=mask.long(),
                            decoder_input_ids=decoder_in)
        return out.logits.float(), aux  # the loss in float32 whatever model.backbone.dtype

    def decoder_prompt(self, batch: TranslationBatch) -> torch.Tensor:
        """(B, 1 + F) first decoder ids per row: the start id, then the forced target prefix (the
        target-language code of a language-code backbone; none otherwise)."""
        rows = [[self.decoder_start_id, *self.text.target_prefix(g)] for g in batch.target_langs]
        if len({len(r) for r in rows}) != 1:
            raise ValueError(f"forced target prefixes of different lengths in one batch: {rows}")
        return torch.tensor(rows, dtype=torch.long, device=self.device)

    def generate_ids(self, batch: TranslationBatch) -> list[list[int]]:
        x, mask, _ = self.encoder_inputs(batch)
        d = self.cfg.decoding
        start = self.decoder_prompt(batch)  # (B, 1 + F)
        # The rest of the backbone's generation_config applies; forced_bos is None because the
        # target-language code is already in decoder_input_ids, per row.
        out = self.backbone.generate(inputs_embeds=x.to(self.backbone.dtype), attention_mask=mask.long(), decoder_input_ids=start,
                                     decoder_start_token_id=self.decoder_start_id, eos_token_id=self.eos_ids,
                                     forced_bos_token_id=None, pad_token_id=self.text.pad_id,
                                     num_beams=d.beam_size, max_new_tokens=d.max_new_tokens,
                                     length_penalty=d.length_penalty, do_sample=False,
                                     use_cache=True)  # (B, 1 + F + generated)
        return strip_eos(out[:, start.shape[1]:].tolist(), self.eos_ids)  # without start and prefix
