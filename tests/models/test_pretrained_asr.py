"""The speech encoder of a NeMo ASR model restored from a local .nemo file."""

import pytest
import torch
from omegaconf import OmegaConf

from nemo_emmett.export import export_model, restore_model
from nemo_emmett.models.salm_t5 import SalmT5

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def asr_nemo(tmp_path_factory):
    from nemo.collections.asr.models import EncDecCTCModel

    labels = [" ", "a", "b", "c"]
    cfg = OmegaConf.create({
        "sample_rate": 16000,
        "labels": labels,
        "preprocessor": {"_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
                         "sample_rate": 16000, "features": 40},
        "encoder": {"_target_": "nemo.collections.asr.modules.ConformerEncoder", "feat_in": 40, "n_layers": 1,
                    "d_model": 24, "n_heads": 4, "subsampling": "dw_striding", "subsampling_factor": 4,
                    "subsampling_conv_channels": 8, "ff_expansion_factor": 2, "conv_kernel_size": 5},
        "decoder": {"_target_": "nemo.collections.asr.modules.ConvASRDecoder", "feat_in": 24,
                    "num_classes": len(labels), "vocabulary": labels},
    })
    model = EncDecCTCModel(cfg=cfg)
    path = tmp_path_factory.mktemp("asr") / "tiny_asr.nemo"
    model.save_to(str(path))
    return path, model


def test_encoder_weights_come_from_the_nemo_file_and_exports_stand_alone(tiny_cfg, asr_nemo, tmp_path):
    path, asr = asr_nemo
    model = SalmT5({**tiny_cfg, "perception": {**tiny_cfg["perception"], "pretrained_asr": str(path)}})
    ours, theirs = model.perception.encoder.state_dict(), asr.encoder.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert model.perception.adapter.proj.in_features == 24  # the adapter follows the restored encoder width

    restored = restore_model(export_model(model, tmp_path / "m.emmett"))  # no .nemo needed to rebuild
    wav = torch.randn(1, 16000)
    lens = torch.tensor([16000])
    model.eval()
    assert torch.equal(model.perception(wav, lens).embeddings, restored.perception(wav, lens).embeddings)
