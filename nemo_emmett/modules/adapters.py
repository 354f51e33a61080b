"""Bottleneck adapters (Houlsby et al., 2019): the components of a frozen pretrained backbone.

One adapter per layer, applied to the layer's output: ``h + up(relu(down(norm(h))))`` with ``up``
zero-initialised, so a fresh adapter leaves the backbone's function unchanged."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BottleneckAdapter(nn.Module):
    def __init__(self, d_model: int, bottleneck: int):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.down = nn.Linear(d_model, bottleneck)
        self.up = nn.Linear(bottleneck, d_model)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(F.relu(self.down(self.norm(h))))  # (B, T, D) -> (B, T, D)


class LayerAdapters(nn.Module):
    """One adapter per layer of one side (encoder or decoder) of a backbone: one named component."""

    def __init__(self, num_layers: int, d_model: int, bottleneck: int):
        super().__init__()
        self.layers = nn.ModuleList(BottleneckAdapter(d_model, bottleneck) for _ in range(num_layers))


def layer_list(stack: nn.Module) -> nn.ModuleList:
    """The layers of a Hugging Face encoder or decoder: T5's ``block``, BART/Marian/M2M's ``layers``."""
    for name in ("block", "layers"):
        layers = getattr(stack, name, None)
        if isinstance(layers, nn.ModuleList):
            return layers
    raise TypeError(f"{type(stack).__name__} has neither .block nor .layers: adapters cannot find its layers")


def with_adapter(output, adapter: BottleneckAdapter):
    """A layer's output (a tensor, or a tuple whose first item is the hidden states) after ``adapter``."""
    if isinstance(output, torch.Tensor):
        return adapter(output)
    return (adapter(output[0]), *output[1:])
