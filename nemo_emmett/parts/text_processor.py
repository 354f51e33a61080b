"""Tokenizer handling and prompt formatting, shared by every model family.

The one object that turns an example's text into the ids the model receives, so that bucketing (``data/lengths.py``),
collation (``data/dataset.py``), the OOMptimizer's worst case and decoding count the same units.

Two kinds of tokenizer:

* **Tag tokenizers** (our SentencePiece models, T5, mT5, Marian, GPT-2 ...): the prompt carries the
  direction, by default only the target-language tag (``<de>``), which SentencePiece models trained
  by ``nemo_emmett.data.prepare.tokenizer`` hold as single tokens (Hugging Face tokenizers split it
  like any other text, unless the tags are added to their vocabulary). Source ids are the text's
  tokens; target ids are the text's tokens then EOS.
* **Language-code tokenizers** (NLLB-200, mBART-50, M2M100: :data:`CODE_FAMILIES`): the backbone's
  own language codes carry the direction, as those models were trained, so the default prompt is
  empty. A text source is what the tokenizer makes of it with ``src_lang`` set (NLLB, mBART-50,
  M2M100: ``[src_code] tokens [EOS]``); a target is ``[tgt_code] tokens [EOS]``, the code being the
  forced first target token (teacher forcing and decoding alike); speech (audio tasks) gets the
  source-language code in its prompt, beside the speech embeddings, where a text source would have
  it. Our language names map to the backbone's codes by ``language_codes`` (an entry wins), else by
  a default per family for ISO 639-1 names (``de`` -> ``deu_Latn`` NLLB, ``de_DE`` mBART-50, ``de``
  M2M100); a language given as a code of the tokenizer is taken as it is."""

from __future__ import annotations

import re
from pathlib import Path

from nemo_emmett.parts.subword_sampling import SubwordSampling, sampled_ids

DEFAULT_PROMPT = "<{target_lang}>"
"""The prompt of every model and task with a tag tokenizer unless configured: the target-language tag alone."""
CODE_PROMPT = ""
"""The default prompt with a language-code tokenizer: none (the codes carry the direction)."""
_TAG = re.compile(r"<([A-Za-z0-9_-]+)>")
SPEECH_TASKS = ("st", "asr")
"""Tasks whose source is speech (``data.examples.AUDIO_TASKS``; parts sits below data)."""

CODE_FAMILIES = {"NllbTokenizer": "nllb", "NllbTokenizerFast": "nllb", "MBart50Tokenizer": "mbart50",
                 "MBart50TokenizerFast": "mbart50", "M2M100Tokenizer": "m2m100"}
"""Hugging Face tokenizer class -> the family of language codes it uses."""
CODE_PATTERNS = {"nllb": re.compile(r"[a-z]{3}_[A-Z][a-z]{3}"), "mbart50": re.compile(r"[a-z]{2}_[A-Z]{2}"),
                 "m2m100": re.compile(r"__([a-z]{2,3})__")}
"""How a language-code token looks in each family (M2M100's token ``__de__`` stands for code ``de``)."""
NLLB_CODES = {
    "af": "afr_Latn", "ar": "arb_Arab", "be": "bel_Cyrl", "bg": "bul_Cyrl", "bn": "ben_Beng", "ca": "cat_Latn",
    "cs": "ces_Latn", "cy": "cym_Latn", "da": "dan_Latn", "de": "deu_Latn", "el": "ell_Grek", "en": "eng_Latn",
    "es": "spa_Latn", "et": "est_Latn", "eu": "eus_Latn", "fa": "pes_Arab", "fi": "fin_Latn", "fr": "fra_Latn",
    "ga": "gle_Latn", "gl": "glg_Latn", "he": "heb_Hebr", "hi": "hin_Deva", "hr": "hrv_Latn", "hu": "hun_Latn",
    "hy": "hye_Armn", "id": "ind_Latn", "is": "isl_Latn", "it": "ita_Latn", "ja": "jpn_Jpan", "ka": "kat_Geor",
    "kk": "kaz_Cyrl", "ko": "kor_Hang", "lt": "lit_Latn", "lv": "lvs_Latn", "mk": "mkd_Cyrl", "mt": "mlt_Latn",
    "nl": "nld_Latn", "no": "nob_Latn", "pl": "pol_Latn", "pt": "por_Latn", "ro": "ron_Latn", "ru": "rus_Cyrl",
    "sk": "slk_Latn", "sl": "slv_Latn", "sr": "srp_Cyrl", "sv": "swe_Latn", "sw": "swh_Latn", "ta": "tam_Taml",
    "th": "tha_Thai", "tr": "tur_Latn", "uk": "ukr_Cyrl", "ur": "urd_Arab", "vi": "vie_Latn", "zh": "zho_Hans",
}
"""ISO 639-1 -> NLLB-200 (FLORES-200) code. mBART-50's default is its code starting ``<lang>_``
(``de_DE``, ``en_XX``); M2M100's is the language itself."""

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "spiece.model", "sentencepiece.bpe.model",
                   "source.spm", "vocab.json", "tokenizer.model", "vocab.txt")
"""Any of these makes a folder a Hugging Face tokenizer folder."""


class TextProcessor:
    """Text <-> ids, plus prompts. Picklable (dataloader workers): the tokenizer loads lazily.

    ``prompt_template``: None picks the default of the tokenizer's kind (:data:`DEFAULT_PROMPT`, or
    :data:`CODE_PROMPT` for a language-code tokenizer). ``language_codes``: our language -> the
    backbone's code (language-code tokenizers only; see the module docstring)."""

    def __init__(self, *, spm_path: str | None = None, hf_path: str | None = None,
                 prompt_template: str | None = None, language_codes: dict[str, str] | None = None):
        if (spm_path is None) == (hf_path is None):
            raise ValueError("give exactly one of spm_path (SentencePiece .model) or hf_path (tokenizer folder)")
        path = spm_path or hf_path
        if not Path(path).exists():
            raise FileNotFoundError(f"tokenizer {path!r} does not exist (no download is attempted: give a local path)")
        if hf_path is not None and not any((Path(hf_path) / f).is_file() for f in TOKENIZER_FILES):
            raise FileNotFoundError(f"tokenizer folder {hf_path!r} holds no tokenizer files (expected one of "
                                    f"{list(TOKENIZER_FILES)}, as save_pretrained() writes them)")
        self.spm_path, self.hf_path, self.language_codes = spm_path, hf_path, dict(language_codes or {})
        self._template = prompt_template
        self._tok = None
        self._codes: dict[str, tuple[list[int], list[int], int]] = {}  # language -> (src prefix, src suffix, code id)

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
        return {**self.__dict__, "_tok": None, "_codes": {}}

    @property
    def prompt_template(self) -> str:
        """The template in use (the configured one, else the default of the tokenizer's kind)."""
        if self._template is not None:
            return self._template
        return CODE_PROMPT if self.code_family else DEFAULT_PROMPT

    # ---- ids --------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Ids the tokenizer can produce (highest id + 1: M2M100 puts its language codes past ``len``)."""
        if self.spm_path:
            return self.tok.get_piece_size()
        return max(len(self.tok), 1 + max(self.tok.get_vocab().values()))

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

    def encode(self, text: str, sampling: SubwordSampling | None = None) -> list[int]:
        """The text's tokens alone, no special tokens (CTC targets; prompts). ``sampling``: one sampled
        segmentation instead of the best one (subword regularization; SentencePiece models only)."""
        if sampling is not None:
            if not self.spm_path:
                raise ValueError(f"subword_sampling (a data transform) needs a SentencePiece tokenizer; this run's is "
                                 f"the Hugging Face tokenizer {self.hf_path!r}: remove the transform or train with "
                                 "a SentencePiece model (model.tokenizer.spm_path or data.tokenizer)")
            return sampled_ids(self.tok, text, sampling)
        if self.spm_path:
            return self.tok.encode(text)
        return self.tok.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        specials = {self.pad_id, self.eos_id, self.bos_id, *(c for _, _, c in self._codes.values())}
        ids = [i for i in ids if i not in specials]
        return self.tok.decode(ids) if self.spm_path else self.tok.decode(ids, skip_special_tokens=True)

    def source_ids(self, text: str, source_lang: str | None = None, sampling: SubwordSampling | None = None) -> list[int]:
        """What the encoder receives for a text source: its tokens, with the language-code
        tokenizer's source specials around them (``[src_code] tokens [EOS]``) where it has them.
        ``sampling``: as in :meth:`encode`."""
        if not self.code_family:
            return self.encode(text, sampling)
        prefix, suffix, _ = self._language(self._need(source_lang, "source_lang"))
        return [*prefix, *self.encode(text, sampling), *suffix]

    def target_prefix(self, target_lang: str | None = None) -> list[int]:
        """The forced first target tokens: ``[tgt_code]`` with a language-code tokenizer, else none."""
        if not self.code_family:
            return []
        return [self._language(self._need(target_lang, "target_lang"))[2]]

    def target_ids(self, text: str, target_lang: str | None = None, sampling: SubwordSampling | None = None) -> list[int]:
        """What the decoder must produce: the forced prefix (:meth:`target_prefix`), the text, then EOS.
        ``sampling``: as in :meth:`encode`, with the target's own seed (:meth:`SubwordSampling.for_target`)."""
        tokens = self.encode(text, None if sampling is None else sampling.for_target())
        return [*self.target_prefix(target_lang), *tokens, self.eos_id]

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
        """The prompt's ids; with a language-code tokenizer, a speech task's prompt starts with the
        source-language code (a text source carries it in :meth:`source_ids`)."""
        text = self.prompt_template.format(task=task, source_lang=source_lang, target_lang=target_lang)
        ids = self.encode(text) if text else []
        if self.code_family and task in SPEECH_TASKS:
            return [*self._language(source_lang)[0], *ids]
        return ids

    # ---- language codes ---------------------------------------------------------------------
    @property
    def code_family(self) -> str | None:
        """``nllb``, ``mbart50`` or ``m2m100`` for a language-code tokenizer (:data:`CODE_FAMILIES`), else None."""
        return None if self.spm_path else CODE_FAMILIES.get(type(self.tok).__name__)

    def known_codes(self) -> list[str]:
        """The language codes of the tokenizer's vocabulary, sorted (empty for a tag tokenizer)."""
        if not self.code_family:
            return []
        pattern = CODE_PATTERNS[self.code_family]
        tokens = {*self.tok.get_vocab(), *self.tok.all_special_tokens}
        return sorted({m.group(m.lastindex or 0) for t in tokens if (m := pattern.fullmatch(t))})

    def language_code(self, lang: str) -> str:
        """The backbone's code of our language ``lang`` (the map's entry, else the family default)."""
        if lang in self.language_codes:
            return self.language_codes[lang]
        known = self.known_codes()
        if lang in known:
            return lang
        if self.code_family == "nllb":
            return NLLB_CODES.get(lang, lang)
        if self.code_family == "mbart50":
            return next((c for c in known if c.startswith(f"{lang}_")), lang)
        return lang

    def _need(self, lang: str | None, name: str) -> str:
        if lang is None:
            raise ValueError(f"tokenizer {self.hf_path!r} uses language codes ({self.code_family}): {name} is required")
        return lang

    def _language(self, lang: str) -> tuple[list[int], list[int], int]:
        """(source prefix, source suffix, code id) of ``lang``, as the Hugging Face tokenizer puts them
        with ``src_lang`` set; an error naming the language, its code and the tokenizer when unknown."""
        if lang in self._codes:
            return self._codes[lang]
        code, tok = self.language_code(lang), self.tok
        token = f"__{code}__" if self.code_family == "m2m100" else code
        code_id = tok.convert_tokens_to_ids(token)
        if code not in self.known_codes() or code_id is None or code_id == tok.unk_token_id:
            some = self.known_codes()[:12]
            raise ValueError(
                f"language {lang!r}: its code {code!r} (model.tokenizer.language_codes, else the {self.code_family} "
                f"default) is not in the vocabulary of the tokenizer {self.hf_path!r}; it knows {len(self.known_codes())} "
                f"codes, e.g. {some}: map the language to one of them in model.tokenizer.language_codes")
        before = tok.src_lang
        tok.src_lang = code  # the tokenizer's own source template (its prefix and suffix tokens)
        self._codes[lang] = (list(tok.prefix_tokens), list(tok.suffix_tokens), code_id)
        tok.src_lang = before
        return self._codes[lang]
