"""``TextProcessor.language_tags``: the target languages a tokenizer can name, specials left out."""

from transformers import T5Tokenizer

from nemo_emmett.parts.text_processor import TextProcessor


def test_language_tags_of_sentencepiece_and_hugging_face_tokenizers(spm_path, tmp_path):
    assert TextProcessor(spm_path=spm_path).language_tags() == ["de", "en", "fr"]
    tok = T5Tokenizer(vocab_file=spm_path, extra_ids=2)  # <extra_id_0>, <extra_id_1>: specials, not languages
    tok.add_tokens(["<es>", "<it>"])
    tok.save_pretrained(tmp_path / "tok")
    assert TextProcessor(hf_path=str(tmp_path / "tok")).language_tags() == ["es", "it"]
