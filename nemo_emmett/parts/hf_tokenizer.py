"""A SentencePiece model as a Hugging Face tokenizer that encodes exactly like it (same ids, same specials).

A model trained here with the SentencePiece tokenizer of ``data/prepare/tokenizer.py`` is saved as a
Hugging Face folder (``models/backbone_folder.py``) whose tokenizer must give the ids the model
learned: transformers' own SentencePiece converter builds it (``SpmConverter.build_tokenizer_from_spm_proto``,
legacy prefixing, which is what ``SentencePieceProcessor.encode`` does), with the model's pad, unknown,
start and end pieces as its special tokens. No family-specific class (``T5Tokenizer`` would renumber the
unknown id to T5's 2); ``AutoTokenizer.from_pretrained`` loads it as a generic fast tokenizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def hf_tokenizer_from_spm(spm_path: str | Path) -> Any:
    """A ``PreTrainedTokenizerFast`` that encodes and decodes like the SentencePiece model at ``spm_path``."""
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import SpmConverter, import_protobuf

    path = Path(spm_path)
    if not path.is_file():
        raise FileNotFoundError(f"SentencePiece model {str(path)!r} does not exist")
    proto = import_protobuf().ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
    except Exception as e:  # protobuf's DecodeError
        raise ValueError(f"{str(path)!r} is not a SentencePiece model: {e}") from e
    vocab = [(p.piece, p.score) for p in proto.pieces]  # (piece, score), in id order
    tok = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab, legacy=True)
    spec = proto.trainer_spec
    specials = {"pad_token": spec.pad_id, "unk_token": spec.unk_id, "bos_token": spec.bos_id, "eos_token": spec.eos_id}
    named = {key: vocab[i][0] for key, i in specials.items() if 0 <= i < len(vocab)}  # -1: the model has none
    return PreTrainedTokenizerFast(tokenizer_object=tok, **named)
