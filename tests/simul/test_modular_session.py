"""Simultaneous decoding of the modular SALM-T5 (MAMMOTH: a frozen backbone with per-language adapters as
components): the session routes through the direction's adapters as the offline decode does."""

from __future__ import annotations

import pytest
import torch

from nemo_emmett.mammoth.modular_salm import ModularSalmT5
from nemo_emmett.simul.policies import build_policy
from nemo_emmett.simul.session import simul_translate
from tests.mammoth.test_modular_salm import adapter_cfg, atask
from tests.simul.helpers import audio_batch, framewise, framewise_streams, train_steps  # noqa: F401  (framewise_streams: the fixture of pytestmark)

STRIDE = 2
LANGS = {"source_lang": "en", "target_lang": "de", "sample_rate": 16000}


pytestmark = pytest.mark.usefixtures("framewise_streams")


@pytest.fixture(scope="module")
def model(spm_path, one_torch_thread):
    torch.manual_seed(0)
    tasks = [{**atask("st_en-de", "en", "de", "encoder_adapter.en", "decoder_adapter.de"), "task": "st",
              "perception": "perception.full"},
             atask("mt_en-de", "en", "de", "encoder_adapter.en", "decoder_adapter.de")]
    cfg = {**adapter_cfg(spm_path, tasks), "audio_position": "after_prompt",
           "simul": {"enabled": True, "k": 2, "stride_frames": STRIDE}, "decoding": {"max_new_tokens": 12}}
    m = framewise(ModularSalmT5(cfg))
    train_steps(m, audio_batch(m, frames=[12, 10, 14]), steps=40)
    return m.eval()


@pytest.mark.parametrize("k", [2, 50])
def test_the_modular_session_equals_the_offline_wait_k_decode(model, k):
    batch = audio_batch(model, frames=[12, 10, 14])
    waves = [batch.audio[b, : int(n)] for b, n in enumerate(batch.audio_lens)]
    model.cfg.simul.k = k
    try:
        expected = [" ".join(h.split()) for h in model.translate_batch(batch)]
    finally:
        model.cfg.simul.k = 2
    results = simul_translate(model, waves, build_policy("wait-k", k=k, stride=STRIDE), **LANGS)
    assert [hyp for hyp, _, _ in results] == expected
    assert all(expected), expected  # it writes something: the equality is not between empty outputs


def test_a_direction_the_modular_model_lacks_is_named(model):
    from nemo_emmett.simul.session import SimulSession

    with pytest.raises(KeyError, match="no modular task for direction st:en-fr; model.modular.tasks has"):
        SimulSession(model, build_policy("wait-k", k=2, stride=STRIDE), **{**LANGS, "target_lang": "fr"})


def test_a_model_without_simultaneous_decoding_is_named(spm_path):
    from nemo_emmett.mammoth.modular import ModularTranslation
    from nemo_emmett.simul.session import SimulSession

    with pytest.raises(TypeError, match="ModularTranslation is not supported; it needs a SALM-T5"):
        SimulSession(object.__new__(ModularTranslation), build_policy("wait-k", k=2, stride=STRIDE), **LANGS)
