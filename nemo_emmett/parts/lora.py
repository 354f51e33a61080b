"""LoRA with ``peft`` on chosen ``nn.Linear`` and GPT-2 ``Conv1D`` layers of any model.

Layers are chosen by regexes fullmatched over dotted module names (``backbone\\..*\\.(q|v)``), resolved
here to exact names and handed to ``peft.inject_adapter_in_model`` as one regex, so peft's own layers
(``y = base(x) + (alpha / r) * B(A(dropout(x)))``, ``B`` zero at init) wrap them in place: the base
weight moves to ``<layer>.base_layer.weight``, the factors are ``<layer>.lora_A.default.weight``
``(r, in)`` and ``<layer>.lora_B.default.weight`` ``(out, r)``. Unlike peft's own entry points, only
the wrapped base layers are frozen: the rest of the model (perception, cross-attention, adapters)
keeps its ``requires_grad``. ``peft`` is imported on first use (it takes seconds).

Before peft, ``LoRALinear`` wrote ``<layer>.base.weight``, ``<layer>.lora_a`` ``(r, in)`` and
``<layer>.lora_b`` ``(out, r)``: :func:`upgrade_lora_keys` maps such state dicts to peft's names.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

ADAPTER = "default"
"""peft's adapter name: the one in ``lora_A.<name>`` and the one ``set_peft_model_state_dict`` fills."""
CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"  # peft's CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME


def _adaptable(module: nn.Module) -> bool:
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, (nn.Linear, Conv1D))


def _tuner_layers(module: nn.Module) -> dict[str, nn.Module]:
    """{dotted name: peft LoRA layer} (outermost ones: a layer's own submodules are not listed)."""
    if not has_lora(module):
        return {}
    from peft.tuners.lora import LoraLayer

    return {n: m for n, m in module.named_modules() if isinstance(m, LoraLayer)}


def has_lora(module: nn.Module) -> bool:
    """Whether peft adapters were injected into ``module`` (without importing peft when not)."""
    return isinstance(getattr(module, "peft_config", None), dict) and ADAPTER in module.peft_config


BART_LIKE_DEFAULTS = {t: ["q_proj", "v_proj"] for t in ("marian", "mbart", "m2m_100")}
"""Backbone families of SALM-T5 that peft's default table lacks: BART-style attention, so peft's 'bart' entry."""


def default_targets(model_type: str, prefix: str = "backbone") -> list[str]:
    """peft's default LoRA layers for a Hugging Face ``model_type`` (T5: q, v; GPT-2: c_attn; Llama:
    q_proj, v_proj; :data:`BART_LIKE_DEFAULTS`), as one fullmatch regex over the module names under ``prefix``."""
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    names = DEFAULTS.get(model_type) or BART_LIKE_DEFAULTS.get(model_type)
    if not names:
        raise ValueError(f"model.lora.targets is null and peft has no default LoRA layers for backbone model_type "
                         f"{model_type!r}: give model.lora.targets (regexes over module names, e.g. "
                         f"['{re.escape(prefix)}\\..*\\.(q_proj|v_proj)'])")
    return [rf"{re.escape(prefix)}\.(?:.*\.)?(?:{'|'.join(re.escape(n) for n in names)})"]


def resolve_targets(module: nn.Module, target_patterns: list[str]) -> list[str]:
    """Names of the ``nn.Linear``/``Conv1D`` modules whose dotted name fullmatches a pattern.

    A pattern that matches none of them gets a WARNING; if none matches at all, ValueError (a LoRA
    run that trains nothing would be worse than a crash)."""
    try:
        compiled = [re.compile(p) for p in target_patterns]
    except re.error as e:
        raise ValueError(f"model.lora.targets: invalid regex '{e.pattern}': {e}") from e
    hits = dict.fromkeys(target_patterns, 0)
    names = []
    for name, sub in module.named_modules():
        if not name or not _adaptable(sub):
            continue
        matched = [p for p, c in zip(target_patterns, compiled) if c.fullmatch(name)]
        for p in matched:
            hits[p] += 1
        if matched:
            names.append(name)
    if not names:
        shown = ", ".join(f"'{p}'" for p in target_patterns)
        raise ValueError(f"LoRA target patterns {shown} matched no nn.Linear or Conv1D module "
                         "(fullmatch on dotted module names, e.g. 'backbone\\..*\\.(q|v)')")
    for p, n in hits.items():
        if n == 0:
            log.warning("LoRA target pattern '%s' matched no nn.Linear or Conv1D module", p)
    return names


def apply_lora(module: nn.Module, target_patterns: list[str], r: int, alpha: float,
               dropout: float = 0.0) -> list[str]:
    """Inject peft LoRA adapters into the layers :func:`resolve_targets` picks; return their names.

    Only those layers' base weights are frozen; every other parameter keeps its ``requires_grad``
    (peft itself would freeze the whole model)."""
    if r < 1:
        raise ValueError(f"model.lora.r: LoRA rank must be >= 1, got {r}")
    if has_lora(module):
        raise ValueError(f"LoRA is already applied to {type(module).__name__} (layers {sorted(_tuner_layers(module))})")
    names = resolve_targets(module, target_patterns)
    from peft import LoraConfig, inject_adapter_in_model
    from transformers.pytorch_utils import Conv1D

    conv1d = [isinstance(module.get_submodule(n), Conv1D) for n in names]
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, bias="none",
                        target_modules="|".join(re.escape(n) for n in names),  # fullmatched by peft
                        fan_in_fan_out=all(conv1d))  # Conv1D stores (in, out); peft switches per layer
    trainable = {id(p): p.requires_grad for p in module.parameters()}
    with warnings.catch_warnings():  # the per-layer fan_in_fan_out switch of a model with both kinds
        warnings.filterwarnings("ignore", message="fan_in_fan_out is set to")
        inject_adapter_in_model(config, module, adapter_name=ADAPTER)
    layers = _tuner_layers(module)
    base = {id(p) for layer in layers.values() for p in layer.get_base_layer().parameters()}
    for p in module.parameters():  # undo peft's "mark only adapters as trainable"
        if id(p) in trainable and id(p) not in base:
            p.requires_grad_(trainable[id(p)])
    if sorted(layers) != sorted(names):  # peft's matching is not ours: never silently adapt other layers
        raise RuntimeError(f"peft adapted {sorted(layers)}, expected {sorted(names)}")
    log.info("LoRA (r=%d, alpha=%g) on %d layers (%d Conv1D)", r, alpha, len(names), sum(conv1d))
    return names


def merge_lora(module: nn.Module) -> list[str]:
    """Merge every adapter into its base weight and put the plain base layer back (peft's
    ``merge_and_unload``, for a model injected in place); return the layer names."""
    layers = _tuner_layers(module)
    for name, layer in layers.items():
        layer.merge(safe_merge=True)  # safe: a NaN in an adapter is an error, not a broken model
        parent, _, child = name.rpartition(".")
        setattr(module.get_submodule(parent) if parent else module, child, layer.get_base_layer())
    if hasattr(module, "peft_config"):
        del module.peft_config
    return sorted(layers)


def adapter_keys(module: nn.Module) -> list[str]:
    """The ``state_dict`` keys of the adapters (``<layer>.lora_A.default.weight`` ...)."""
    layers = _tuner_layers(module)
    keys = []
    for key in module.state_dict():
        layer = next((n for n in layers if key.startswith(f"{n}.")), None)
        if layer is not None and not key.startswith(f"{layer}.base_layer."):
            keys.append(key)
    return keys


def adapter_parameter_names(module: nn.Module) -> tuple[set[str], set[str]]:
    """(adapter parameters, the base parameters of the adapted layers) by dotted name."""
    layers = _tuner_layers(module)
    adapters, bases = set(), set()
    for name, _ in module.named_parameters():
        layer = next((n for n in layers if name.startswith(f"{n}.")), None)
        if layer is not None:
            (bases if name.startswith(f"{layer}.base_layer.") else adapters).add(name)
    return adapters, bases


# ---- PEFT's own format -------------------------------------------------------------------------
def save_adapter(module: nn.Module, folder: str | Path) -> None:
    """``adapter_config.json`` + ``adapter_model.safetensors`` as peft writes them; keys are the
    model's own module names (``backbone.….q.lora_A.weight``), as ``get_peft_model_state_dict``
    gives them for a model injected in place. Load with ``inject_adapter_in_model(PeftConfig.from_pretrained(folder),
    model)`` + ``set_peft_model_state_dict`` (or :func:`load_adapter_state`)."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    module.peft_config[ADAPTER].save_pretrained(str(folder))
    state = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(module, adapter_name=ADAPTER).items()}
    save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})


def load_adapter_state(module: nn.Module, state: Mapping[str, torch.Tensor], source: str = "adapter") -> None:
    """PEFT-format adapter weights into ``module``'s adapters (``set_peft_model_state_dict``);
    ValueError naming ``source`` when a key is left over or an adapter is not filled."""
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(module, dict(state), adapter_name=ADAPTER)
    unfilled = sorted(set(adapter_keys(module)) & set(result.missing_keys))
    if result.unexpected_keys or unfilled:
        raise ValueError(f"{source}: the adapter weights do not fit the model's LoRA layers: unexpected "
                         f"{sorted(result.unexpected_keys)[:5]}, not filled {unfilled[:5]}")


def load_adapter_files(module: nn.Module, config: bytes | None, weights: bytes | None, source: str) -> None:
    """The contents of ``adapter_config.json`` and ``adapter_model.safetensors`` (:func:`save_adapter`)
    into the adapters ``module`` was built with; errors name ``source``."""
    if config is None or weights is None or not has_lora(module):
        raise ValueError(f"{source} needs both {CONFIG_FILE} and {WEIGHTS_FILE} and a model built with LoRA "
                         f"(has {CONFIG_FILE}: {config is not None}, {WEIGHTS_FILE}: {weights is not None}, "
                         f"LoRA layers: {has_lora(module)})")
    saved, own = json.loads(config), module.peft_config[ADAPTER]
    if (saved.get("target_modules"), saved.get("r"), saved.get("lora_alpha")) != (own.target_modules, own.r, own.lora_alpha):
        raise ValueError(f"{source}{CONFIG_FILE} describes other LoRA layers than model.lora builds: target_modules "
                         f"{saved.get('target_modules')!r}, r {saved.get('r')}, lora_alpha {saved.get('lora_alpha')} "
                         f"(expected {own.target_modules!r}, r {own.r}, lora_alpha {own.lora_alpha})")
    from safetensors.torch import load

    load_adapter_state(module, load(weights), source=f"{source}{WEIGHTS_FILE}")


def load_state_without_adapters(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """``load_state_dict`` as strict as ever, except that the adapters' keys (filled from PEFT's files
    already) are not in ``state``."""
    result = module.load_state_dict(state, strict=False)
    missing = sorted(set(result.missing_keys) - set(adapter_keys(module)))
    if missing or result.unexpected_keys:
        raise RuntimeError(f"{source} does not fit the model: missing keys {missing[:5]}, "
                           f"unexpected keys {sorted(result.unexpected_keys)[:5]}")


# ---- checkpoints written before peft ----------------------------------------------------------
def upgrade_lora_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with the pre-peft ``LoRALinear`` names mapped to peft's (same order otherwise):
    ``<layer>.base.<p>`` -> ``<layer>.base_layer.<p>``, ``<layer>.lora_a`` ``(r, in)`` ->
    ``<layer>.lora_A.default.weight`` ``(r, in)``, ``<layer>.lora_b`` ``(out, r)`` ->
    ``<layer>.lora_B.default.weight`` ``(out, r)``: peft's factors are ``nn.Linear`` layers whose
    weights have the old factors' shapes, so only the names change. Other keys are left as they are."""
    old = {k[: -len(".lora_a")] for k in state if k.endswith(".lora_a")}
    if not old:
        return dict(state)
    out = {}
    for key, value in state.items():
        layer, _, leaf = key.rpartition(".")
        if layer in old and leaf in ("lora_a", "lora_b"):
            key = f"{layer}.lora_{leaf[-1].upper()}.{ADAPTER}.weight"
        else:
            i = key.find(".base.")
            while i != -1 and key[:i] not in old:  # the '.base.' of a LoRA layer, not of a module named 'base'
                i = key.find(".base.", i + 1)
            if i != -1:
                key = f"{key[:i]}.base_layer.{key[i + len('.base.'):]}"
        out[key] = value
    log.info("Mapped the pre-peft LoRA names of %d layers to peft's", len(old))
    return out
