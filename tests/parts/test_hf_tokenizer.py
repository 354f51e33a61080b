"""The SentencePiece model as a Hugging Face tokenizer: the same ids, specials and text back."""

import pytest
import sentencepiece as spm

from nemo_emmett.parts.hf_tokenizer import hf_tokenizer_from_spm

TEXTS = ["<de> dreihundertneun", "three hundred and nine", "  two   spaces  around ", "a<fr>b",
         "Ünïcödé 123 ＡＢＣ", "fünf\nneun", "<en>", ""]


def test_the_converted_tokenizer_gives_the_sentencepiece_ids(spm_path, tmp_path):
    from transformers import AutoTokenizer

    sp = spm.SentencePieceProcessor(model_file=spm_path)
    hf_tokenizer_from_spm(spm_path).save_pretrained(str(tmp_path / "tok"))
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "tok"), local_files_only=True)  # as a user loads it
    assert len(tok) == sp.get_piece_size()
    assert (tok.pad_token_id, tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == \
           (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id())
    for text in TEXTS:  # unknown characters, user-defined tags, runs of whitespace included
        ids = sp.encode(text)
        assert tok.encode(text, add_special_tokens=False) == ids, text
        if sp.unk_id() not in ids:  # SentencePiece writes the unknown piece as " ⁇ ", transformers drops it
            assert tok.decode(ids, skip_special_tokens=True) == sp.decode(ids), text


def test_a_file_that_is_not_a_sentencepiece_model_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.model"):
        hf_tokenizer_from_spm(tmp_path / "nope.model")
    bad = tmp_path / "bad.model"
    bad.write_text("not a model")
    with pytest.raises(ValueError, match=r"bad\.model.*not a SentencePiece model"):
        hf_tokenizer_from_spm(bad)
