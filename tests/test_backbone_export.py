"""A trained model's backbone saved as a Hugging Face folder, then loaded as ``backbone.pretrained_path``:
the foundation of stage 2 of the forgetting recipe computes what the trained model computed."""

import pytest
import torch

from nemo_emmett.models.backbone_folder import save_backbone_pretrained
from nemo_emmett.models.salm_t5 import SalmT5
from tests.models.test_salm_t5 import one_step, text_batch


def trained(cfg):
    torch.manual_seed(0)
    model = SalmT5(cfg).train()
    for _ in range(2):  # LoRA's B starts at zero: two steps move it
        one_step(model, text_batch(model))
    return model.eval()


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_the_loaded_foundation_gives_the_same_text_logits_and_translations(tiny_cfg, tmp_path, lora):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    if lora:
        tiny_cfg = {**tiny_cfg, "lora": {"targets": [r"backbone\..*\.(q|v)"], "r": 2, "alpha": 4.0}}
    model = trained(tiny_cfg)
    folder = save_backbone_pretrained(model, tmp_path / "hf")
    # a plain Hugging Face folder: a user's AutoModel / AutoTokenizer read it, without adapters
    hf = AutoModelForSeq2SeqLM.from_pretrained(str(folder), local_files_only=True)
    assert not any("lora" in n for n, _ in hf.named_parameters())
    assert len(AutoTokenizer.from_pretrained(str(folder), local_files_only=True)) == model.text.vocab_size

    cfg = {k: v for k, v in tiny_cfg.items() if k not in ("tokenizer", "lora")}
    loaded = SalmT5({**cfg, "backbone": {"pretrained_path": str(folder)}})
    assert loaded.text.hf_path == str(folder)  # its tokenizer is the folder's, not the SentencePiece model
    assert loaded.backbone.training  # from_pretrained's eval mode is undone: dropout trains
    loaded.eval()
    batch, same = text_batch(model), text_batch(loaded)
    assert torch.equal(batch.source_ids, same.source_ids) and torch.equal(batch.prompt_ids, same.prompt_ids)
    with torch.no_grad():
        torch.testing.assert_close(loaded.logits(same)[0], model.logits(batch)[0], atol=1e-5, rtol=1e-5)
    assert loaded.translate_batch(same) == model.translate_batch(batch)


def test_an_existing_folder_is_not_overwritten_unless_asked(tiny_cfg, tmp_path):
    model = SalmT5(tiny_cfg)
    (tmp_path / "hf").mkdir()
    with pytest.raises(FileExistsError, match="hf"):
        save_backbone_pretrained(model, tmp_path / "hf")
    save_backbone_pretrained(model, tmp_path / "hf", overwrite=True)
    assert (tmp_path / "hf" / "config.json").is_file()
    assert not list(tmp_path.glob("hf.partial-*"))
