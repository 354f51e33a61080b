"""SALM-T5: speech embeddings and the prompt, side by side, as the input of a pretrained
encoder-decoder NMT backbone (T5, mT5, Marian, NLLB); text batches take the plain text path."""

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

    def logits(self, batch: TranslationBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, mask, aux = self.encoder_inputs(batch)
        targets = batch.target_ids  # (B, U)
        start = torch.full_like(targets[:, :1], self.backbone.config.decoder_start_token_id)
        decoder_in = torch.cat([start, targets[:, :-1]], dim=1)  # (B, U): shifted right
        out = self.backbone(inputs_embeds=x.to(self.backbone.dtype), attention_mask=mask.long(),
                            decoder_input_ids=decoder_in)
        return out.logits.float(), aux  # the loss in float32 whatever model.backbone.dtype

    def generate_ids(self, batch: TranslationBatch) -> list[list[int]]:
        x, mask, _ = self.encoder_inputs(batch)
        d = self.cfg.decoding
        out = self.backbone.generate(inputs_embeds=x.to(self.backbone.dtype), attention_mask=mask.long(),
                                     num_beams=d.beam_size, max_new_tokens=d.max_new_tokens, length_penalty=d.length_penalty,
                                     do_sample=False, use_cache=True)  # (B, 1 + generated)
        return strip_eos(out[:, 1:].tolist(), self.text.eos_id)  # without the decoder start token
