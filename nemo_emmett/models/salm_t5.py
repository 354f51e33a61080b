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
target languages) and stops at any of the backbone's EOS ids.

With ``simul.enabled`` (prefix-to-prefix training, ``simul/masks.py``) an audio batch runs the encoder
block-causally over the speech and gives target token i the speech of units < i + k; decoding is then
greedy wait-k over the whole audio (``simul/session.py`` decodes as the audio arrives)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nemo_emmett.data.batch import TranslationBatch
from nemo_emmett.models.base import TranslationModel
from nemo_emmett.models.config import SalmT5Config
from nemo_emmett.parts.decoding import greedy_search, strip_eos
from nemo_emmett.parts.sequence import concat_padded, lengths_to_mask
from nemo_emmett.simul.masks import (
    cache_kwargs,
    cross_attention_mask,
    encoder_self_mask,
    hf_mask,
    sample_k,
    wait_k_frames,
)

AUDIO_POSITIONS = ("before_prompt", "after_prompt")


@dataclass
class SimulEncoding:
    """The encoder's output for an audio batch laid out ``[prompt ; speech]`` (``simul``)."""

    states: torch.Tensor
    """(B, S, D) encoder states."""
    prompt_lens: torch.Tensor
    """(B,) prompt positions, first."""
    speech_lens: torch.Tensor
    """(B,) speech frames, right after the prompt."""
    aux: dict[str, torch.Tensor]
    """Auxiliary losses of the perception, (B,) each."""


class SalmT5(TranslationModel):
    config_class = SalmT5Config

    def check_config(self) -> None:
        s = self.cfg.simul
        if not s.enabled:
            return
        for key in ("k", "stride_frames"):
            if getattr(s, key) <= 0:
                raise ValueError(f"model.simul.{key}: expected a positive integer, got {getattr(s, key)}")
        if len(s.k_range) != 2 or not 1 <= s.k_range[0] <= s.k_range[1]:
            raise ValueError(f"model.simul.k_range: expected [lo, hi] with 1 <= lo <= hi, got {s.k_range}")
        if self.cfg.audio_position != "after_prompt":
            raise ValueError(f"model.simul.enabled needs model.audio_position=after_prompt (got "
                             f"{self.cfg.audio_position!r}): a prompt after the speech would move as the speech grows")
        if self.cfg.decoding.beam_size != 1:
            raise ValueError(f"model.simul.enabled decodes greedily (wait-k); set model.decoding.beam_size=1 "
                             f"(got {self.cfg.decoding.beam_size})")

    def build_backbone(self) -> torch.nn.Module:
        from transformers import AutoModelForSeq2SeqLM

        if self.cfg.audio_position not in AUDIO_POSITIONS:
            raise ValueError(f"model.audio_position must be one of {AUDIO_POSITIONS}, got {self.cfg.audio_position!r}")
        model = self.load_hf_backbone(AutoModelForSeq2SeqLM, decoder_start_token_id=self.text.pad_id)
        if model.config.is_encoder_decoder is not True:
            raise ValueError(f"SALM-T5 needs an encoder-decoder backbone; {type(model).__name__} is not one")
        return model

    def encoder_inputs(self, batch: TranslationBatch, speech_frames: int | None = None,
                       ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(B, S, D) encoder input embeddings, their (B, S) mask, and auxiliary losses; ``speech_frames``:
        only the first frames of the speech (a prefix, as simultaneous decoding reads it)."""
        prompt = (self.embed(batch.prompt_ids), batch.prompt_lens)
        aux: dict[str, torch.Tensor] = {}
        if batch.modality == "audio":
            emb, lens, aux = self.speech_embeddings(batch)
            speech = (emb, lens) if speech_frames is None else (emb[:, :speech_frames], lens.clamp(max=speech_frames))
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

    # ---- simultaneous (model.simul) -----------------------------------------------------------
    def is_simul(self, batch: TranslationBatch) -> bool:
        """Whether the batch trains and decodes under the wait-k masks (audio batches of a simul model)."""
        return self.cfg.simul.enabled and batch.modality == "audio"

    def simul_k(self) -> int:
        """The wait-k lag of this forward pass: drawn per training step (``multi_path``), else ``simul.k``."""
        s = self.cfg.simul
        return sample_k(s.k_range, self.global_step, s.seed) if s.multi_path and self.training else s.k

    def simul_encode(self, batch: TranslationBatch, speech_frames: int | None = None) -> SimulEncoding:
        """The encoder over ``[prompt ; speech]`` (the first ``speech_frames`` frames), block-causal by
        ``simul.stride_frames`` when ``simul.enabled`` (else as trained: full attention)."""
        if self.cfg.audio_position != "after_prompt":
            raise ValueError("simultaneous decoding needs model.audio_position=after_prompt (the prompt first)")
        x, mask, aux = self.encoder_inputs(batch, speech_frames)
        x = x.to(self.backbone.dtype)  # (B, S, D)
        prompt_lens = batch.prompt_lens
        speech_lens = mask.sum(dim=1) - prompt_lens  # (B,)
        if self.cfg.simul.enabled:
            allowed = encoder_self_mask(prompt_lens, speech_lens, x.shape[1], self.cfg.simul.stride_frames)
            enc_mask = hf_mask(self.backbone.config, allowed, x.dtype, cross=False)  # (B, 1, S, S)
        else:
            enc_mask = mask.long()
        states = self.backbone.get_encoder()(inputs_embeds=x, attention_mask=enc_mask).last_hidden_state
        return SimulEncoding(states, prompt_lens, speech_lens, aux)

    def simul_decoder_logits(self, enc: SimulEncoding, ids: torch.Tensor, visible_frames: torch.Tensor,
                             cache: object | None = None) -> torch.Tensor:
        """(B, n, V) float scores after decoder inputs ``ids`` (B, n), each seeing the prompt and its first
        ``visible_frames`` (B, n) speech frames; ``cache``: a Hugging Face ``EncoderDecoderCache`` to extend."""
        from transformers.modeling_outputs import BaseModelOutput

        allowed = cross_attention_mask(enc.prompt_lens, enc.speech_lens, enc.states.shape[1], visible_frames)
        cross = hf_mask(self.backbone.config, allowed, enc.states.dtype, cross=True)  # (B, 1, n, S)
        out = self.backbone(encoder_outputs=BaseModelOutput(last_hidden_state=enc.states), attention_mask=cross,
                            decoder_input_ids=ids, use_cache=cache is not None,
                            **cache_kwargs(self.backbone, cache))
        return out.logits.float()

    def simul_generate_ids(self, batch: TranslationBatch) -> list[list[int]]:
        """Greedy wait-k decoding of whole audio: decoder position p sees the speech of units < p + k."""
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        enc = self.simul_encode(batch)
        k, stride = self.cfg.simul.k, self.cfg.simul.stride_frames
        start = self.decoder_prompt(batch)  # (B, 1 + F)
        B, F1 = start.shape
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        first = self.simul_decoder_logits(enc, start, wait_k_frames(B, F1, k, stride, start.device), cache)
        state = {"position": F1}

        def step(tokens: torch.Tensor, st: dict) -> tuple[torch.Tensor, dict]:
            visible = torch.full((B, 1), (st["position"] + k) * stride, device=tokens.device)
            logits = self.simul_decoder_logits(enc, tokens[:, None], visible, cache)  # (B, 1, V)
            return logits[:, -1].log_softmax(-1), {"position": st["position"] + 1}

        return greedy_search(step, first[:, -1].log_softmax(-1), state, eos_id=self.eos_ids,
                             max_new_tokens=self.cfg.decoding.max_new_tokens)

    def logits(self, batch: TranslationBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.is_simul(batch):  # prefix-to-prefix: target token i sees the speech of units < i + k
            enc = self.simul_encode(batch)
            targets = batch.target_ids  # (B, U)
            start = torch.full_like(targets[:, :1], self.decoder_start_id)
            decoder_in = torch.cat([start, targets[:, :-1]], dim=1)  # (B, U): shifted right
            visible = wait_k_frames(*targets.shape, self.simul_k(), self.cfg.simul.stride_frames, targets.device)
            return self.simul_decoder_logits(enc, decoder_in, visible), enc.aux
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
        if self.is_simul(batch):
            return self.simul_generate_ids(batch)
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
