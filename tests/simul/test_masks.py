"""Prefix-to-prefix (wait-k) training: exact masks on hand-made layouts, the SALM-T5 switch, and the property
the masks exist for: target token i's scores are the same whether the input holds the whole audio or only
the prefix that token may see."""

import dataclasses

import pytest
import torch

from nemo_emmett.data.batch import TranslationBatch
from nemo_emmett.data.dataset import pad_ids
from nemo_emmett.models.salm_t5 import SalmT5
from nemo_emmett.simul.masks import cross_attention_mask, encoder_self_mask, hf_mask, sample_k, wait_k_frames
from tests.simul.helpers import audio_batch, framewise, simul_cfg, train_steps

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_encoder_is_block_causal_over_the_speech_and_sees_the_prompt():
    # example 0: 1 prompt position, 4 speech frames; example 1: 2 prompt positions, 2 frames, 1 padding
    mask = encoder_self_mask(torch.tensor([1, 2]), torch.tensor([4, 2]), length=5, stride=2)
    assert mask.int().tolist() == [
        [[1, 0, 0, 0, 0],   # the prompt sees the prompt only
         [1, 1, 1, 0, 0],   # frames 0-1 (block 0) see block 0
         [1, 1, 1, 0, 0],
         [1, 1, 1, 1, 1],   # frames 2-3 (block 1) see blocks 0-1
         [1, 1, 1, 1, 1]],
        [[1, 1, 0, 0, 0],
         [1, 1, 0, 0, 0],
         [1, 1, 1, 1, 0],   # one block of two frames
         [1, 1, 1, 1, 0],
         [1, 1, 1, 1, 0]],  # the padding row sees every valid position, never the padding
    ]


def test_target_token_i_sees_the_prompt_and_the_speech_of_units_below_i_plus_k():
    visible = wait_k_frames(2, 3, k=1, stride=2)
    assert visible.tolist() == [[2, 4, 6]] * 2
    mask = cross_attention_mask(torch.tensor([1, 0]), torch.tensor([4, 3]), length=5, visible_frames=visible)
    assert mask.int().tolist() == [
        [[1, 1, 1, 0, 0],   # token 0: prompt + block 0
         [1, 1, 1, 1, 1],   # token 1: prompt + blocks 0-1 (all the speech)
         [1, 1, 1, 1, 1]],
        [[1, 1, 0, 0, 0],   # no prompt: block 0
         [1, 1, 1, 0, 0],   # the speech ends after 3 frames; padding is never seen
         [1, 1, 1, 0, 0]],
    ]
    nothing = cross_attention_mask(torch.tensor([0]), torch.tensor([2]), 3, torch.tensor([[0]]))
    assert nothing.int().tolist() == [[[1, 1, 0]]]  # nothing to see yet: every valid position, no empty row


def test_multi_path_k_is_a_function_of_the_step_and_the_seed():
    ks = [sample_k([1, 9], step) for step in range(200)]
    assert set(ks) == set(range(1, 10))
    assert ks == [sample_k((1, 9), step) for step in range(200)]  # resumable: the same after a restart
    assert ks != [sample_k([1, 9], step, seed=1) for step in range(200)]
    assert {sample_k([3, 3], s) for s in range(10)} == {3}


def test_hf_masks_take_the_form_of_the_attention_implementation():
    from transformers import T5Config

    allowed = torch.tensor([[[True, False], [True, True]]])  # (1, 2, 2)
    cfg = T5Config()
    cfg._attn_implementation = "eager"
    eager = hf_mask(cfg, allowed, torch.float32, cross=False)
    assert eager.shape == (1, 1, 2, 2) and eager[0, 0, 0, 0] == 0 and eager[0, 0, 0, 1] == torch.finfo(torch.float32).min
    cfg._attn_implementation = "sdpa"
    assert torch.equal(hf_mask(cfg, allowed, torch.float32, cross=True), allowed[:, None])
    cfg._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="attention implementation 'flash_attention_2' takes no custom masks"):
        hf_mask(cfg, allowed, torch.float32, cross=False)


@pytest.mark.parametrize(("change", "message"), [
    ({"audio_position": "before_prompt"}, "model.simul.enabled needs model.audio_position=after_prompt"),
    ({"simul": {"enabled": True, "k": 0}}, r"model.simul.k: expected a positive integer, got 0"),
    ({"simul": {"enabled": True, "stride_frames": -1}}, r"model.simul.stride_frames: expected a positive integer"),
    ({"simul": {"enabled": True, "k_range": [3, 1]}}, r"model.simul.k_range: expected \[lo, hi\]"),
    ({"decoding": {"beam_size": 4}}, "model.simul.enabled decodes greedily"),
])
def test_bad_simul_configs_name_the_key(tiny_cfg, change, message):
    with pytest.raises(ValueError, match=message):
        SalmT5({**simul_cfg(tiny_cfg), **change})


def per_token_prefix_logits(model, batch, k: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(full, prefix): target token i's scores (B, U, V) over the whole audio, and over the audio cut to
    the (i + k) * stride frames token i may see (one forward pass per token)."""
    with torch.no_grad():
        full, _ = model.logits(batch)
        rows = []
        for i in range(batch.target_ids.shape[1]):
            cut = (i + k) * stride * 1280
            prefix = dataclasses.replace(batch, audio=batch.audio[:, :cut], audio_lens=batch.audio_lens.clamp(max=cut))
            rows.append(model.logits(prefix)[0][:, i])
    return full, torch.stack(rows, dim=1)


def test_token_i_sees_only_its_prefix_after_training_steps(tiny_cfg):
    torch.manual_seed(0)
    model = framewise(SalmT5(simul_cfg(tiny_cfg, k=2, stride_frames=2)))
    batch = audio_batch(model, frames=[11, 7])
    losses = train_steps(model, batch, steps=3)  # the wait-k training path runs forward and backward
    assert losses[-1] < losses[0]
    model.eval()
    full, prefix = per_token_prefix_logits(model, batch, k=2, stride=2)
    assert torch.allclose(full, prefix, atol=1e-5), (full - prefix).abs().amax()
    # the masks are what makes it so: the same weights with offline attention see later speech
    model.cfg.simul.enabled = False
    full, prefix = per_token_prefix_logits(model, batch, k=2, stride=2)
    assert not torch.allclose(full, prefix, atol=1e-3)


@pytest.mark.parametrize("model_type", ["marian", "mbart", "m2m_100"])
def test_other_encoder_decoder_families_take_the_masks(tiny_cfg, model_type):
    """Marian, mBART and M2M100/NLLB build their masks with ``transformers.masking_utils`` as T5 does."""
    sizes = {"d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 4,
             "decoder_attention_heads": 4, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64,
             "max_position_embeddings": 128}
    torch.manual_seed(0)
    cfg = {**simul_cfg(tiny_cfg, k=1, stride_frames=3), "backbone": {"config": {"model_type": model_type, **sizes}}}
    model = framewise(SalmT5(cfg)).eval()
    batch = audio_batch(model, frames=[10, 6])
    full, prefix = per_token_prefix_logits(model, batch, k=1, stride=3)
    assert torch.allclose(full, prefix, atol=1e-5), (full - prefix).abs().amax()
    with torch.no_grad():  # encoding 2 whole units gives the full encoding's first states
        whole, part = model.simul_encode(batch).states, model.simul_encode(batch, speech_frames=6).states
    n = part.shape[1]
    assert n == int(batch.prompt_lens.max()) + 6 and torch.allclose(whole[:, :n], part, atol=1e-5)


def test_multi_path_draws_k_per_step_and_validation_uses_k(tiny_cfg):
    model = SalmT5(simul_cfg(tiny_cfg, multi_path=True, k_range=[1, 9], k=4))
    model.train()
    assert model.simul_k() == sample_k([1, 9], 0)  # no trainer attached: step 0
    model.eval()
    assert model.simul_k() == 4


def text_batch(model) -> TranslationBatch:
    text = model.text
    source_ids, source_lens = pad_ids([text.source_ids(s) for s in ("one hundred", "two cent sixty")], text.pad_id)
    target_ids, target_lens = pad_ids([text.target_ids(t) for t in ("hundert", "zwei neun")], text.pad_id)
    prompt_ids, prompt_lens = pad_ids([text.prompt_ids(task="mt", source_lang="en", target_lang="de")] * 2,
                                      text.pad_id)
    return TranslationBatch(modality="text", bucket=-1, ids=["t0", "t1"], tasks=["mt"] * 2, source_langs=["en"] * 2,
                            target_langs=["de"] * 2, source_texts=["", ""], target_texts=["", ""],
                            source_ids=source_ids, source_lens=source_lens, target_ids=target_ids,
                            target_lens=target_lens, prompt_ids=prompt_ids, prompt_lens=prompt_lens)


def test_text_batches_are_unaffected(tiny_cfg):
    model = SalmT5(simul_cfg(tiny_cfg)).eval()
    batch = text_batch(model)
    with torch.no_grad():
        simul, _ = model.logits(batch)
        model.cfg.simul.enabled = False
        offline, _ = model.logits(batch)
    assert torch.equal(simul, offline)


def test_a_training_step_with_the_speech_encoder(tiny_cfg):
    """The real perception (NeMo FastConformer, CTC) under the wait-k masks: finite loss, every part learns."""
    torch.manual_seed(0)
    model = SalmT5(simul_cfg(tiny_cfg))
    batch = audio_batch(model, frames=[9, 5])
    model.train()
    loss, per_task = model.task_losses(batch)
    loss.backward()
    assert torch.isfinite(loss) and set(per_task) == {"st", "ctc"}
    for prefix in ("perception.", "backbone.encoder.", "backbone.decoder."):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters()
                   if n.startswith(prefix)), prefix
