import dataclasses

import numpy as np
import pytest
import torch

from nemo_emmett.data.dataset import collate
from nemo_emmett.data.examples import make_audio_example, make_text_example
from nemo_emmett.data.sampler import Batch
from nemo_emmett.models.salm_t5 import SalmT5


def text_batch(model, n=3):
    exs = [make_text_example(example_id=f"t{i}", source_text="three hundred and nine" if i % 2 else "two",
                             target_text="dreihundertneun" if i % 2 else "zwei", source_lang="en",
                             target_lang="de", dataset="d") for i in range(n)]
    return collate(Batch("text", 0, 10, 10, exs, [(1, 1)] * n), sampling_rate=16000, text=model.text)


def audio_batch(model, n=2, seed=0):
    from lhotse import Recording
    from lhotse.audio import AudioSource

    rng = np.random.default_rng(seed)
    exs = []
    for i in range(n):
        samples = (0.1 * rng.standard_normal(16000 * (i + 1))).astype("float32")
        rec = Recording(id=f"r{i}", sources=[AudioSource(type="memory", channels=[0], source=_wav_bytes(samples))],
                        sampling_rate=16000, num_samples=len(samples), duration=len(samples) / 16000)
        exs.append(make_audio_example(recording=rec, transcript="two hundred", source_lang="en",
                                      target_text="zweihundert" if i else "two hundred",
                                      target_lang="de" if i else "en", task="st" if i else "asr", dataset="d"))
    return collate(Batch("audio", 0, 10, 10, exs, [(1, 1)] * n), sampling_rate=16000, text=model.text)


def _wav_bytes(samples):
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, samples, 16000, format="WAV")
    return buf.getvalue()


def one_step(model, batch):
    opt = model.configure_optimizers()["optimizer"]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss, per_task = model.task_losses(batch)
    loss.backward()
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    return loss, per_task, changed


@pytest.mark.parametrize("modality", ["text", "audio"])
def test_one_step_finite_loss_and_only_trainable_parameters_change(tiny_cfg, modality):
    tiny_cfg["freeze"] = [r"backbone\.encoder\..*"]
    model = SalmT5(tiny_cfg)
    model.train()
    batch = text_batch(model) if modality == "text" else audio_batch(model)
    loss, per_task, changed = one_step(model, batch)
    assert torch.isfinite(loss)
    assert set(per_task) == ({"mt"} if modality == "text" else {"asr", "st", "ctc"})
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith("backbone.encoder.") for n in frozen)
    assert not changed & frozen
    assert any(n.startswith("backbone.decoder.") for n in changed)
    # the speech path is used by audio batches only
    assert any(n.startswith("perception.") for n in changed) == (modality == "audio")


def test_audio_position_changes_the_encoder_input(tiny_cfg):
    model = SalmT5(tiny_cfg).eval()
    batch = audio_batch(model)
    x_before, mask, _ = model.encoder_inputs(batch)
    model.cfg.audio_position = "after_prompt"
    x_after, mask2, _ = model.encoder_inputs(batch)
    assert torch.equal(mask, mask2) and not torch.allclose(x_before, x_after)
    # the prompt (target-language tag) sits right after each example's speech frames
    speech, lens, _ = model.speech_embeddings(batch)
    prompt = model.embed(batch.prompt_ids)
    for b in range(len(lens)):
        n = int(lens[b])
        assert torch.allclose(x_before[b, :n], speech[b, :n])
        assert torch.allclose(x_before[b, n : n + int(batch.prompt_lens[b])], prompt[b, : batch.prompt_lens[b]])


def test_ctc_loss_on_the_transcript_is_added_and_can_be_switched_off(tiny_cfg):
    model = SalmT5(tiny_cfg).eval()  # no dropout: two passes give the same numbers
    batch = audio_batch(model)
    loss, parts = model.task_losses(batch)
    assert torch.isfinite(parts["ctc"]) and parts["ctc"] > 0
    no_transcripts = dataclasses.replace(batch, transcript_ids=None, transcript_lens=None)
    loss_without, parts_without = model.task_losses(no_transcripts)
    assert "ctc" not in parts_without
    assert torch.allclose(loss, loss_without + 0.3 * parts["ctc"])
    off = SalmT5({**tiny_cfg, "perception": {**tiny_cfg["perception"], "ctc_weight": 0.0}})
    assert off.perception.ctc_head is None and "ctc" not in off.task_losses(audio_batch(off))[1]


def test_greedy_and_beam_decoding_return_text(tiny_cfg):
    model = SalmT5(tiny_cfg).eval()
    batch = text_batch(model)
    greedy = model.translate_batch(batch)
    model.cfg.decoding.beam_size = 3
    beam = model.translate_batch(batch)
    assert len(greedy) == len(beam) == 3 and all(isinstance(h, str) for h in greedy + beam)


def test_backbone_from_a_local_save_pretrained_folder(tiny_cfg, tmp_path):
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    reference = SalmT5(tiny_cfg)
    folder = tmp_path / "t5"
    reference.backbone.save_pretrained(folder)
    cfg = {**tiny_cfg, "backbone": {"pretrained_path": str(folder)}}
    loaded = SalmT5(cfg)
    ids = torch.tensor([[5, 6, 7, 3]])
    for m in (reference, loaded):
        m.eval()
    a = reference.backbone(input_ids=ids, decoder_input_ids=ids).logits
    b = loaded.backbone(input_ids=ids, decoder_input_ids=ids).logits
    assert torch.equal(a, b)
    assert AutoConfig.from_pretrained(folder).model_type == "t5"
    assert isinstance(loaded.backbone, type(AutoModelForSeq2SeqLM.from_pretrained(folder)))


def test_missing_local_paths_fail_clearly(tiny_cfg, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"backbone.pretrained_path: .*nope.*nothing is downloaded"):
        SalmT5({**tiny_cfg, "backbone": {"pretrained_path": str(tmp_path / "nope")}})
    with pytest.raises(FileNotFoundError, match=r"missing\.model"):
        SalmT5({**tiny_cfg, "tokenizer": {"spm_path": str(tmp_path / "missing.model")}})
    with pytest.raises(FileNotFoundError, match=r"perception.pretrained_asr: .*asr\.nemo"):
        SalmT5({**tiny_cfg, "perception": {"pretrained_asr": str(tmp_path / "asr.nemo")}})
    with pytest.raises(ValueError, match="model_type"):
        SalmT5({**tiny_cfg, "backbone": {"config": {"d_model": 32}}})


def test_bad_config_key_is_named(tiny_cfg):
    with pytest.raises(Exception, match="audio_positon"):
        SalmT5({**tiny_cfg, "audio_positon": "before_prompt"})


def test_lora_trains_only_adapters_when_the_backbone_is_frozen(tiny_cfg):
    tiny_cfg["lora"] = {"targets": [r"backbone\..*\.(q|v)"], "r": 2, "alpha": 4.0}
    tiny_cfg["freeze"] = [r"backbone\.(?!.*lora_).*"]
    model = SalmT5(tiny_cfg).train()
    loss, _, changed = one_step(model, text_batch(model))
    loss, _, changed2 = one_step(model, text_batch(model))  # B starts at zero: A moves from step 2
    backbone_changed = {n for n in changed | changed2 if n.startswith("backbone.")}
    assert backbone_changed and all("lora_" in n for n in backbone_changed)


def test_a_scheduler_that_needs_max_steps_gets_the_trainers(tiny_cfg):
    import lightning.pytorch as pl

    tiny_cfg["optim"]["lr_scheduler"] = {"name": "CosineAnnealing", "warmup_steps": 2}
    model = SalmT5(tiny_cfg)
    model.trainer = pl.Trainer(max_steps=7, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    assert model.configure_optimizers()["lr_scheduler"]["scheduler"].max_steps == 7
