"""MGCM module grouping per granularity, and module types."""

import pytest

from nemo_emmett.mgcm.grouping import DEFAULT_MODULE_TYPES, group_parameters, module_type

NAMES = ["perception.encoder.layers.0.linear.weight", "perception.encoder.layers.0.linear.bias",
         "perception.encoder.layers.0.norm.weight", "backbone.shared.weight",
         "backbone.encoder.block.0.layer.0.SelfAttention.q.weight",
         "backbone.encoder.block.0.layer.0.SelfAttention.k.weight",
         "backbone.encoder.block.0.layer.0.layer_norm.weight",
         "backbone.decoder.block.0.layer.1.EncDecAttention.q.weight", "scale"]


def test_tensor_granularity():
    assert group_parameters(NAMES, granularity="tensor") == {n: [n] for n in NAMES}


def test_module_granularity_groups_by_owner_or_pattern():
    groups = group_parameters(NAMES, granularity="module")
    assert groups == {
        "perception.encoder.layers.0.linear": NAMES[0:2],
        "perception.encoder.layers.0.norm": [NAMES[2]],
        "backbone.shared": [NAMES[3]],
        "backbone.encoder.block.0.layer.0.SelfAttention.q": [NAMES[4]],
        "backbone.encoder.block.0.layer.0.SelfAttention.k": [NAMES[5]],
        "backbone.encoder.block.0.layer.0.layer_norm": [NAMES[6]],
        "backbone.decoder.block.0.layer.1.EncDecAttention.q": [NAMES[7]],
        "scale": ["scale"],
    }
    sublayer = r"(backbone\.(?:en|de)coder\.block\.\d+\.layer\.\d+)\..*"
    groups = group_parameters(NAMES, granularity="module", module_patterns=[sublayer])
    assert groups["backbone.encoder.block.0.layer.0"] == NAMES[4:7]
    assert groups["backbone.decoder.block.0.layer.1"] == [NAMES[7]]
    assert groups["perception.encoder.layers.0.linear"] == NAMES[0:2]  # no pattern: owner
    assert sum(len(v) for v in groups.values()) == len(NAMES)


def test_component_granularity():
    comps = {"speech": r"perception\..*", "text_encoder": r"backbone\.(shared|encoder)\..*", "rest": ".*"}
    groups = group_parameters(NAMES, granularity="component", components=comps)
    assert groups == {"speech": NAMES[0:3], "text_encoder": NAMES[3:7], "rest": NAMES[7:]}
    with pytest.raises(ValueError, match=r"2 parameter\(s\) match no component.*EncDecAttention"):
        group_parameters(NAMES, granularity="component", components={k: v for k, v in comps.items() if k != "rest"})
    with pytest.raises(ValueError, match="mgcm.components"):
        group_parameters(NAMES, granularity="component")


def test_bad_granularity_and_patterns_are_named():
    with pytest.raises(ValueError, match="mgcm.granularity .* 'layer'"):
        group_parameters(NAMES, granularity="layer")
    with pytest.raises(ValueError, match=r"mgcm.module_patterns: .* needs a capture group"):
        group_parameters(NAMES, granularity="module", module_patterns=[r"backbone\..*"])
    with pytest.raises(ValueError, match="mgcm.components.x: .* not a valid regex"):
        group_parameters(NAMES, granularity="component", components={"x": "("})


def test_module_types():
    types = [module_type(n, DEFAULT_MODULE_TYPES) for n in NAMES]
    assert types == ["perception"] * 3 + ["embeddings"] + ["encoder"] * 3 + ["decoder", "other"]
