"""The SimulEval agent end to end on a real model: a tiny streaming SALM-T5 trained a few steps under the
wait-k masks, exported as a user would, loaded by the agent from ``--model``, evaluated by SimulEval 1.1.4."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

pytest.importorskip("simuleval", reason="SimulEval is a test-only extra (bash scripts/setup.sh --test installs it)")
from nemo_emmett.simul.latency import read_instances_log  # noqa: E402
from tests.simul.helpers import audio_batch, simul_cfg, train_steps  # noqa: E402
from tests.simul.test_agent import run_simuleval  # noqa: E402

RATE = 16000
TARGET = "das ist ein test"
CHUNK = 320 * RATE // 1000


@pytest.fixture
def exported(tiny_cfg, tmp_path, one_torch_thread):
    from nemo_emmett.export import export_model
    from nemo_emmett.models.salm_t5 import SalmT5

    torch.manual_seed(0)
    cfg = simul_cfg(tiny_cfg, k=1, stride_frames=2)
    cfg["perception"] = {**cfg["perception"], "att_context_size": [8, 1], "causal_convolutions": True}
    cfg["decoding"] = {"max_new_tokens": 10}
    model = SalmT5(cfg)
    assert model.perception.is_streaming
    train_steps(model, audio_batch(model, frames=[14, 18], targets=[TARGET, TARGET]), steps=25)
    return export_model(model.eval(), tmp_path / "simul.emmett")


def test_the_agent_translates_with_an_exported_model_under_simuleval(exported, tmp_path, monkeypatch):
    from nemo_emmett.export import load_model
    from nemo_emmett.simul.policies import build_policy
    from nemo_emmett.simul.session import simul_translate

    rng = np.random.default_rng(0)
    clips = [0.1 * rng.standard_normal(n).astype("float32") for n in (17920 + 700, 23040 + 300)]  # not whole chunks
    paths = []
    for i, clip in enumerate(clips):
        sf.write(tmp_path / f"utt{i}.wav", clip, RATE, subtype="FLOAT")
        paths.append(str(tmp_path / f"utt{i}.wav"))
    (tmp_path / "src.txt").write_text("".join(f"{p}\n" for p in paths))
    (tmp_path / "tgt.txt").write_text(f"{TARGET}\n{TARGET}\n")
    out = run_simuleval(tmp_path, monkeypatch, model=str(exported), k=2)
    instances = read_instances_log(out / "instances.log", direction="en-de")
    # The same model, policy and chunks through simul_translate: SimulEval's log holds exactly its words.
    model = load_model(exported)
    ours = simul_translate(model, [torch.from_numpy(c) for c in clips], build_policy("wait-k", k=2, stride=2),
                           source_lang="en", target_lang="de", sample_rate=RATE, chunk_samples=CHUNK)
    assert [i.prediction for i in instances] == [hyp for hyp, _, _ in ours]
    assert any(i.prediction for i in instances), "the trained model writes something"
    for inst, (hyp, delays, _) in zip(instances, ours):
        assert inst.delays == pytest.approx(delays) and len(inst.delays) == len(hyp.split())
        assert inst.delays == sorted(inst.delays)
        assert inst.delays[0] >= 320  # wait-2 of 160 ms units: nothing before the first 320 ms chunk is read
    assert (out / "scores.tsv").exists()
