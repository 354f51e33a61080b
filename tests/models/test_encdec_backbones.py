"""SALM-T5 on every encoder-decoder family (T5, mT5, Marian, mBART-50, NLLB-200), each a tiny
random-init model with its tokenizer built offline from a tiny SentencePiece model, saved with
``save_pretrained`` and loaded back as ``model.backbone.pretrained_path``, as a user loads t5-base.
Also: language codes, the backbone's generation config, and the errors of bad local folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from nemo_emmett.data.dataset import collate
from nemo_emmett.data.examples import make_text_example
from nemo_emmett.data.sampler import Batch
from nemo_emmett.models.salm_t5 import SalmT5
from nemo_emmett.parts.decoding import strip_eos
from nemo_emmett.parts.text_processor import TextProcessor
from tests.conftest import TINY_PERCEPTION
from tests.models.test_salm_t5 import audio_batch

FAMILIES = ("t5", "mt5", "marian", "mbart50", "nllb")
NLLB_CODES = ["eng_Latn", "deu_Latn", "fra_Latn"]
SIZES = {"d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 4,
         "decoder_attention_heads": 4, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "max_position_embeddings": 128}
T5_SIZES = {"d_model": 32, "d_ff": 64, "d_kv": 8, "num_heads": 4, "num_layers": 1, "num_decoder_layers": 1}
EXTRA_EOS = 7
"""A second EOS id in the NLLB folder's generation config (a list, as some backbones have)."""


def build_tokenizer(family: str, spm_path: str, out: Path):
    """The family's Hugging Face tokenizer, built offline from the SentencePiece model ``spm_path``."""
    from transformers import MarianTokenizer, MBart50Tokenizer, NllbTokenizer, T5Tokenizer

    src = out / "spm"
    src.mkdir(parents=True, exist_ok=True)
    if family in ("t5", "mt5"):
        shutil.copy(spm_path, src / "spiece.model")
        return T5Tokenizer.from_pretrained(src, extra_ids=4)
    if family == "marian":
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=spm_path)
        vocab = {"</s>": 0, "<unk>": 1, "<pad>": 2}
        for piece in (sp.id_to_piece(i) for i in range(sp.get_piece_size())):
            vocab.setdefault(piece, len(vocab))
        (src / "vocab.json").write_text(json.dumps(vocab))
        return MarianTokenizer(source_spm=spm_path, target_spm=spm_path, vocab=str(src / "vocab.json"))
    shutil.copy(spm_path, src / "sentencepiece.bpe.model")
    if family == "mbart50":
        return MBart50Tokenizer.from_pretrained(src, src_lang="en_XX", tgt_lang="de_DE")
    return NllbTokenizer.from_pretrained(src, additional_special_tokens=NLLB_CODES, src_lang="eng_Latn")


def build_model(family: str, tok):
    """A tiny random-init backbone of the family; decoder start as the real checkpoints have it."""
    from transformers import (
        M2M100Config,
        M2M100ForConditionalGeneration,
        MarianConfig,
        MarianMTModel,
        MBartConfig,
        MBartForConditionalGeneration,
        MT5Config,
        MT5ForConditionalGeneration,
        T5Config,
        T5ForConditionalGeneration,
    )

    vocab = max(len(tok), 1 + max(tok.get_vocab().values()))
    ids = {"pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id}
    if family in ("t5", "mt5"):
        cfg_cls, model_cls = (T5Config, T5ForConditionalGeneration) if family == "t5" else \
            (MT5Config, MT5ForConditionalGeneration)
        # padded past the tokenizer, as t5-base's 32,128 rows are for 32,100 ids
        return model_cls(cfg_cls(vocab_size=vocab + 5, decoder_start_token_id=tok.pad_token_id, **T5_SIZES, **ids))
    if family == "marian":
        return MarianMTModel(MarianConfig(vocab_size=vocab, decoder_start_token_id=tok.pad_token_id, **SIZES, **ids))
    cfg_cls, model_cls = (MBartConfig, MBartForConditionalGeneration) if family == "mbart50" else \
        (M2M100Config, M2M100ForConditionalGeneration)
    model = model_cls(cfg_cls(vocab_size=vocab, decoder_start_token_id=tok.eos_token_id, **SIZES, **ids))
    if family == "nllb":
        model.generation_config.eos_token_id = [tok.eos_token_id, EXTRA_EOS]
    return model


def save_family(family: str, spm_path: str, out: Path) -> Path:
    """``out/<family>``: the backbone and its tokenizer, as ``save_pretrained`` writes them."""
    torch.manual_seed(0)
    tok = build_tokenizer(family, spm_path, out / f"{family}-build")
    folder = out / family
    build_model(family, tok).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def folders(spm_path, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("encdec")
    return {f: save_family(f, spm_path, out) for f in FAMILIES}


def model_cfg(folder: Path, **extra) -> dict:
    return {"backbone": {"pretrained_path": str(folder)}, "perception": dict(TINY_PERCEPTION),
            "optim": {"optimizer": {"_target_": "torch.optim.AdamW", "lr": 1e-2}, "lr_scheduler": None}, **extra}


def mixed_text_batch(model: SalmT5) -> object:
    """Text rows en->de and en->fr in one batch (a language-code backbone needs one code per row)."""
    exs = [make_text_example(example_id=f"t{i}", source_text="three hundred and nine" if i % 2 else "two",
                             target_text="neun" if i % 2 else "deux", source_lang="en",
                             target_lang="de" if i % 2 else "fr", dataset="d") for i in range(4)]
    return collate(Batch("text", 0, 10, 10, exs, [(1, 1)] * 4), sampling_rate=16000, text=model.text)


@pytest.fixture(scope="module")
def models(folders, one_torch_thread) -> dict[str, SalmT5]:
    return {f: SalmT5(model_cfg(folders[f])) for f in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_one_training_step_reaches_perception_and_backbone(models, family):
    model = models[family].train()
    expected = {"t5": "T5", "mt5": "MT5", "marian": "Marian", "mbart50": "MBart", "nllb": "M2M100"}[family]
    assert type(model.backbone).__name__.startswith(expected)
    model.zero_grad()
    loss = model.task_losses(mixed_text_batch(model))[0] + model.task_losses(audio_batch(model))[0]
    assert torch.isfinite(loss)
    loss.backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.startswith("perception.") for n in grads)
    assert any(n.startswith("backbone.") and "decoder" in n for n in grads)
    assert any(n.startswith("backbone.") and "encoder" in n for n in grads)
    model.zero_grad()


@pytest.mark.parametrize("family", FAMILIES)
def test_decoding_starts_from_the_backbone_start_and_the_target_code_per_row(models, family, monkeypatch):
    model = models[family].eval()
    backbone = model.backbone
    seen = {}
    real = backbone.generate

    def spy(**kw):
        seen.update(kw)
        return real(**kw)

    monkeypatch.setattr(backbone, "generate", spy)
    batch = mixed_text_batch(model)
    for beams in (1, 2):
        model.cfg.decoding.beam_size = beams
        hyps = model.translate_batch(batch)
        assert len(hyps) == 4 and all(isinstance(h, str) for h in hyps)
    model.cfg.decoding.beam_size = 1
    start = backbone.generation_config.decoder_start_token_id
    assert model.decoder_start_id == start == (model.text.eos_id if family in ("mbart50", "nllb") else model.text.pad_id)
    rows = seen["decoder_input_ids"].tolist()
    if family in ("mbart50", "nllb"):  # [start, target-language code] per row, de and fr mixed
        tok = model.text.tok
        codes = {"mbart50": ("de_DE", "fr_XX"), "nllb": ("deu_Latn", "fra_Latn")}[family]
        de, fr = (tok.convert_tokens_to_ids(c) for c in codes)
        assert rows == [[start, fr], [start, de], [start, fr], [start, de]]
        assert seen["forced_bos_token_id"] is None
    else:
        assert rows == [[start]] * 4
    assert set(seen["eos_token_id"]) == set(model.eos_ids)
    assert seen["num_beams"] == 2 and seen["max_new_tokens"] == model.cfg.decoding.max_new_tokens


def test_teacher_forcing_starts_from_the_backbone_decoder_start(models):
    model = models["nllb"]
    batch = mixed_text_batch(model)
    seen = {}
    real = model.backbone.forward

    def spy(*a, **kw):
        seen.update(kw)
        return real(*a, **kw)

    model.backbone.forward = spy
    try:
        model.logits(batch)
    finally:
        del model.backbone.forward
    dec = seen["decoder_input_ids"]
    assert (dec[:, 0] == model.text.eos_id).all()  # NLLB's decoder start is </s>
    assert torch.equal(dec[:, 1:], batch.target_ids[:, :-1])  # then the target, code first


def test_generation_eos_ids_may_be_a_list_and_hypotheses_stop_at_any(models):
    model = models["nllb"]
    assert model.eos_ids == sorted({model.text.eos_id, EXTRA_EOS})
    assert strip_eos([[5, EXTRA_EOS, 6], [5, 2, 6], [5, 6]], model.eos_ids) == [[5], [5], [5, 6]]


@pytest.mark.parametrize("family", ["mbart50", "nllb"])
def test_language_code_ids_are_what_the_hugging_face_tokenizer_makes(folders, family):
    from transformers import AutoTokenizer

    text = TextProcessor(hf_path=str(folders[family]))
    codes = {"mbart50": ("en_XX", "de_DE"), "nllb": ("eng_Latn", "deu_Latn")}[family]
    ref = AutoTokenizer.from_pretrained(folders[family], src_lang=codes[0], tgt_lang=codes[1])
    line = "three hundred and nine"
    assert text.source_ids(line, source_lang="en") == ref(line).input_ids  # src_lang code, text, EOS
    assert text.target_ids(line, target_lang="de") == ref(text_target=line).input_ids  # tgt code first
    assert text.prompt_template == "" and text.prompt_ids(task="mt", source_lang="en", target_lang="de") == []
    # speech gets the source-language code where a text source has it
    code_en = ref.convert_tokens_to_ids(codes[0])
    assert text.prompt_ids(task="st", source_lang="en", target_lang="de") == [code_en]
    assert text.decode(text.target_ids(line, target_lang="de")).strip() == line


def test_default_codes_per_family_and_a_map_entry_overrides(folders):
    nllb = TextProcessor(hf_path=str(folders["nllb"]))
    mbart = TextProcessor(hf_path=str(folders["mbart50"]))
    assert (nllb.code_family, mbart.code_family) == ("nllb", "mbart50")
    assert nllb.language_code("de") == "deu_Latn" and mbart.language_code("de") == "de_DE"
    assert nllb.language_code("deu_Latn") == "deu_Latn"  # a code of the tokenizer is taken as it is
    mapped = TextProcessor(hf_path=str(folders["nllb"]), language_codes={"de": "fra_Latn"})
    assert mapped.target_prefix("de") == nllb.target_prefix("fr")
    assert TextProcessor(hf_path=str(folders["t5"])).code_family is None


def test_unknown_language_names_the_language_code_tokenizer_and_known_codes(folders):
    nllb = TextProcessor(hf_path=str(folders["nllb"]))
    with pytest.raises(ValueError, match=r"language 'es'.*'spa_Latn'.*nllb.*deu_Latn"):
        nllb.target_ids("x", target_lang="es")
    mapped = TextProcessor(hf_path=str(folders["mbart50"]), language_codes={"xx": "xx_YY"})
    with pytest.raises(ValueError, match=r"language 'xx'.*'xx_YY'.*mbart50.*de_DE"):
        mapped.source_ids("x", source_lang="xx")


def test_a_tokenizer_larger_than_the_embeddings_names_both(folders, spm_path, tmp_path):
    from transformers import T5Config, T5ForConditionalGeneration

    folder = tmp_path / "small"
    T5ForConditionalGeneration(T5Config(vocab_size=10, **T5_SIZES)).save_pretrained(folder)
    cfg = model_cfg(folder, tokenizer={"hf_path": str(folders["t5"])})
    n = TextProcessor(hf_path=str(folders["t5"])).vocab_size
    with pytest.raises(ValueError, match=rf"tokenizer .*t5.* has {n} ids but the backbone .*small.* has 10 "
                                         r"embedding rows: expected tokenizer vocab <= embedding rows"):
        SalmT5(cfg)


def test_incomplete_local_folders_name_the_path_and_what_is_missing(folders, tmp_path):
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    shutil.copy(folders["t5"] / "config.json", no_weights / "config.json")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(folders["t5"] / name, no_weights / name)
    with pytest.raises(FileNotFoundError, match=r"no_weights.*no weights \(expected one of .*model.safetensors"):
        SalmT5(model_cfg(no_weights))
    no_tokenizer = tmp_path / "no_tokenizer"
    shutil.copytree(folders["t5"], no_tokenizer)
    for f in no_tokenizer.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "spiece")):
            f.unlink()
    with pytest.raises(FileNotFoundError, match=r"no_tokenizer.*holds no tokenizer files \(expected one of"):
        SalmT5(model_cfg(no_tokenizer))


def test_a_random_init_backbone_with_a_language_code_tokenizer_starts_from_pad(folders):
    cfg = model_cfg(folders["nllb"], tokenizer={"hf_path": str(folders["nllb"])})
    cfg["backbone"] = {"config": {"model_type": "m2m_100", **SIZES}}
    model = SalmT5(cfg).eval()
    assert model.decoder_start_id == model.text.pad_id != model.text.eos_id  # today's behaviour
    batch = mixed_text_batch(model)
    assert (batch.target_ids[:, 0] != model.text.eos_id).all()  # every target starts with its code
    assert len(model.translate_batch(batch)) == 4


def test_language_codes_survive_pickling(folders):
    import pickle

    text = TextProcessor(hf_path=str(folders["nllb"]), language_codes={"de": "fra_Latn"})
    ids = text.target_ids("vier", target_lang="de")
    again = pickle.loads(pickle.dumps(text))  # a dataloader worker's copy: the tokenizer reloads lazily
    assert again._tok is None and again.target_ids("vier", target_lang="de") == ids


def test_an_exported_nllb_model_restores_with_its_codes_and_decoder_start(models, tmp_path):
    from nemo_emmett.export import export_model, restore_model

    model = models["nllb"].eval()
    restored = restore_model(export_model(model, tmp_path / "nllb.emmett"))
    assert restored.text.code_family == "nllb" and restored.decoder_start_id == model.decoder_start_id
    assert restored.eos_ids == model.eos_ids
    batch = mixed_text_batch(model)
    assert restored.generate_ids(batch) == model.generate_ids(batch)
