"""State dicts as safetensors: shared views written once and named again, overlapping views copied, exact values back."""

import json

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from nemo_emmett.parts.tensor_files import load_state, save_state, shared_aliases


def tied_state() -> dict[str, torch.Tensor]:
    emb = torch.randn(5, 3)
    base = torch.arange(12.0)
    return {"shared": emb, "encoder.embed": emb, "decoder.embed": emb, "lm_head": emb.clone(),
            "head": base[:8], "tail": base[4:], "transposed": emb.t(), "empty": torch.zeros(0)}


def test_shared_aliases_lists_identical_views_only():
    assert shared_aliases(tied_state()) == {"encoder.embed": "shared", "decoder.embed": "shared"}


def test_save_and_load_give_every_name_back_with_its_values(tmp_path):
    state = tied_state()
    save_state(state, tmp_path / "m.safetensors", metadata={"note": "x"})
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        assert set(f.keys()) == set(state) - {"encoder.embed", "decoder.embed"}  # tied: written once
        meta = f.metadata()
    assert json.loads(meta["aliases"]) == {"encoder.embed": "shared", "decoder.embed": "shared"} and meta["note"] == "x"
    for loaded in (load_state(tmp_path / "m.safetensors"), load_state((tmp_path / "m.safetensors").read_bytes())):
        assert set(loaded) == set(state)
        for k, v in state.items():
            assert torch.equal(loaded[k], v), k


def test_any_safetensors_file_loads(tmp_path):
    save_file({"a": torch.ones(2)}, str(tmp_path / "plain.safetensors"))
    assert set(load_state(tmp_path / "plain.safetensors")) == {"a"}
