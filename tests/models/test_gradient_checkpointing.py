"""Activation checkpointing of the backbone (model.backbone.gradient_checkpointing, Hugging Face's own)
and of the speech encoder (model.perception.gradient_checkpointing, per Conformer layer): the same
loss and gradients, layers really recomputed in the backward pass, decoding with the KV cache."""

import pytest
import torch

from nemo_emmett.models.bestow_gpt import BestowGpt
from nemo_emmett.models.salm_t5 import SalmT5
from tests.models.test_bestow_gpt import TINY_LLAMA, talkative
from tests.models.test_bestow_gpt import cfg as bestow_cfg  # noqa: F401 (fixture)
from tests.models.test_salm_t5 import audio_batch, text_batch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# A module inside a checkpointed layer of each backbone: its forward runs again in the backward pass.
INNER = {"t5": lambda b: b.decoder.block[0].layer[-1], "gpt2": lambda b: b.transformer.h[0].mlp,
         "llama": lambda b: b.model.layers[0].mlp}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NEMO_EMMETT_CACHE", str(tmp_path / "cache"))


@pytest.fixture(params=["salm_t5", "bestow_gpt", "bestow_llama"])
def family(request, tiny_cfg, bestow_cfg):  # noqa: F811
    """(model class, config with everything trainable) per family; dropout on (recomputation replays it)."""
    if request.param == "salm_t5":
        return SalmT5, tiny_cfg
    if request.param == "bestow_gpt":
        return BestowGpt, {**bestow_cfg, "freeze": []}
    return BestowGpt, {**bestow_cfg, "freeze": [], "backbone": {"config": dict(TINY_LLAMA)}}


def is_checkpointing(backbone):
    return getattr(backbone, "is_activation_checkpointing", None) if hasattr(backbone, "is_activation_checkpointing") \
        else backbone.is_gradient_checkpointing


def checkpointed(cfg):
    return {**cfg, "backbone": {**cfg["backbone"], "gradient_checkpointing": True},
            "perception": {**cfg["perception"], "gradient_checkpointing": True}}


def loss_and_grads(model, batch):
    model.train().zero_grad()
    if model.perception is not None:  # its training-time dither is not reproducible by seed, checkpointing or not
        model.perception.preprocessor.eval()
    torch.manual_seed(1)  # the same dropout masks in both models
    loss, _ = model.task_losses(batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def count_forwards(module):
    """Calls of ``module``, counted as they start (a recomputation stops early, once the last
    activation it needs is back, so it may never return)."""
    calls = []
    module.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls


def test_checkpointing_gives_the_same_loss_and_gradients_and_recomputes(family):
    cls, cfg = family
    plain = cls(cfg)
    model = cls(checkpointed(cfg))
    model.load_state_dict(plain.state_dict())
    assert is_checkpointing(model.backbone) and not is_checkpointing(plain.backbone)
    family_name = model.backbone.config.model_type
    inner = {name: count_forwards(INNER[family_name](m.backbone)) for name, m in (("plain", plain), ("ckpt", model))}
    conformer = {name: count_forwards(m.perception.encoder.layers[0].feed_forward1)
                 for name, m in (("plain", plain), ("ckpt", model))}
    for batch in (text_batch(plain), audio_batch(plain)):
        for counts in (*inner.values(), *conformer.values()):
            counts.clear()
        loss, grads = loss_and_grads(plain, batch)
        loss_ckpt, grads_ckpt = loss_and_grads(model, batch)
        assert torch.allclose(loss, loss_ckpt)
        assert grads.keys() == grads_ckpt.keys() and grads
        for n in grads:
            assert torch.allclose(grads[n], grads_ckpt[n], atol=1e-6), n
        assert (len(inner["plain"]), len(inner["ckpt"])) == (1, 2)  # forward, then again in the backward
        expected = (1, 2) if batch.modality == "audio" else (0, 0)
        assert (len(conformer["plain"]), len(conformer["ckpt"])) == expected


def test_decoding_keeps_the_kv_cache_in_eval(family):
    """Hugging Face turns the cache off under checkpointing in training only: in eval both models
    decode alike (BESTOW-GPT's step would lose its context, beam search its cache, were it off)."""
    cls, cfg = family
    plain = talkative(cls(cfg))
    model = cls(checkpointed(cfg)).eval()
    model.load_state_dict(plain.state_dict())
    for beam in (1, 2):
        plain.cfg.decoding.beam_size = model.cfg.decoding.beam_size = beam
        for batch in (text_batch(plain), audio_batch(plain)):
            hyps = plain.generate_ids(batch)
            assert model.generate_ids(batch) == hyps and any(hyps)


def test_an_encoder_without_layers_is_refused_by_key():
    from torch import nn

    from nemo_emmett.modules.perception import checkpoint_layers

    with pytest.raises(ValueError, match=r"perception\.gradient_checkpointing: Linear"):
        checkpoint_layers(nn.Linear(2, 2))
