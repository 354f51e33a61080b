"""Tokenizer handling and prompt formatting, shared by every model family.

The prompt tells the model what to produce: by default only the target-language tag
(``<de>``), which SentencePiece models trained by ``nemo_emmett.data.prepare.tokenizer`` hold as single
tokens. Hugging Face tokenizers (pretrained backbones) split it like any other text, unless the
tags are added to their vocabulary."""

from __future__ import annotations

import re
from pathlib import Path

DEFAULT_PROMPT = "<{target_lang}>"
"""The prompt of every model and task unless configured: the target-language tag alone."""
_TAG = re.compile(r"<([A-Za-z0-9_-]+)>")


class TextProcessor:
    """Text <-> ids, plus prompts. Picklable (dataloader workers): the tokenizer loads lazily."""

    def __init__(self, *, spm_path: str | None = None, hf_path: str | None = None,
                 prompt_template: str = DEFAULT_PROMPT):
        if (spm_path is None) == (hf_path is None):
            raise ValueError("give exactly one of spm_path (SentencePiece .model) or hf_path (tokenizer folder)")
        path = spm_path or hf_path
        if not Path(path).exists():
            raise FileNotFoundError(f"tokenizer {path!r} does not exist (no download is attempted: give a local path)")
        self.spm_path, self.hf_path, self.prompt_template = spm_path, hf_path, prompt_template
        self._tok = None

    @property
    def tok(self):
        if self._tok is None:
            if self.spm_path is not None:
                import sentencepiece as spm

                self._tok = spm.SentencePieceProcessor(model_file=self.spm_path)
            else:
                from transformers import AutoTokenizer

                self._tok = AutoTokenizer.from_pretrained(self.hf_path, local_files_only=True)
        return self._tok

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tok": None}

    # ---- ids --------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.tok.get_piece_size() if self.spm_path else len(self.tok)

    @property
    def pad_id(self) -> int:
        """Padding id; EOS for Hugging Face tokenizers without one (GPT-2, Llama): padding is
        masked by lengths everywhere, so its value never reaches a loss."""
        if self.spm_path:
            return self.tok.pad_id()
        return self.eos_id if self.tok.pad_token_id is None else self.tok.pad_token_id

    @property
    def eos_id(self) -> int:
        return self.tok.eos_id() if self.spm_path else self.tok.eos_token_id

    @property
    def bos_id(self) -> int:
        """Start symbol for decoder-only prompts; falls back to EOS where the tokenizer has no BOS."""
        bos = self.tok.bos_id() if self.spm_path else self.tok.bos_token_id
        return self.eos_id if bos is None or bos < 0 else bos

    def encode(self, text: str) -> list[int]:
        if self.spm_path:
            return self.tok.encode(text)
        return self.tok.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        specials = {self.pad_id, self.eos_id, self.bos_id}
        ids = [i for i in ids if i not in specials]
        return self.tok.decode(ids) if self.spm_path else self.tok.decode(ids, skip_special_tokens=True)

    def target_ids(self, text: str) -> list[int]:
        """What the decoder must produce: the text then EOS."""
        return [*self.encode(text), self.eos_id]

    def language_tags(self) -> list[str]:
        """The languages whose tag ``<xx>`` is one token of the vocabulary (SentencePiece user-defined
        symbols, Hugging Face added tokens), sorted: the target languages the default prompt can name.
        Specials (``<unk>``, ``<s>``, ``<pad>``, byte pieces) are not languages."""
        if self.spm_path:
            sp = self.tok
            pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())
                      if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i))]
        else:  # added tokens, less the tokenizer's specials (<pad>, <unk>, T5's <extra_id_N>)
            pieces = set(self.tok.get_added_vocab()) - set(self.tok.all_special_tokens)
        return sorted({m.group(1) for p in pieces if (m := _TAG.fullmatch(p))})

    def prompt_ids(self, *, task: str, source_lang: str, target_lang: str) -> list[int]:
        text = self.prompt_template.format(task=task, source_lang=source_lang, target_lang=target_lang)
        return self.encode(text)
