"""``TextProcessor.language_tags``: the target languages a tokenizer can name, specials left out."""

import shutil

from transformers import T5Tokenizer

from nemo_emmett.parts.text_processor import TextProcessor


def test_language_tags_of_sentencepiece_and_hugging_face_tokenizers(spm_path, tmp_path):
    assert TextProcessor(spm_path=spm_path).language_tags() == ["de", "en", "fr"]
    (tmp_path / "spm").mkdir()
    shutil.copyfile(spm_path, tmp_path / "spm" / "spiece.model")  # T5Tokenizer(vocab_file=...) ignores the model
    tok = T5Tokenizer.from_pretrained(str(tmp_path / "spm"), extra_ids=2)  # <extra_id_N>: specials, not languages
    assert len(tok) > 10
    tok.add_tokens(["<es>", "<it>"])
    tok.save_pretrained(tmp_path / "tok")
    assert TextProcessor(hf_path=str(tmp_path / "tok")).language_tags() == ["es", "it"]
