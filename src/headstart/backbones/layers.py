"""Features from earlier layers of a backbone, for ranking which layer transfers best.

An earlier block can transfer better than the last one to a distant domain. ``tap_layers``
wraps a backbone so that one forward pass returns the pooled output of several layer
groups side by side (image maps: global average pool; text: masked mean over tokens).
"""

from __future__ import annotations

import re
from dataclasses import replace

import torch
from torch import nn

from ..errors import ConfigError
from .base import Backbone
from .text_encoders import TextEncoder

__all__ = ["tap_layers", "layer_candidates", "FINAL"]

FINAL = "final"


def _module_name(patterns: tuple[str, ...]) -> str | None:
    """``^blocks\\.4(\\.|$)`` -> ``blocks.4``: the module a one-pattern group names."""
    if len(patterns) != 1:
        return None
    match = re.fullmatch(r"\^(.*)\(\\\.\|\$\)", patterns[0])
    return match.group(1).replace("\\", "") if match else None


def layer_candidates(backbone: Backbone, count: int = 3) -> list[str]:
    """The last ``count`` tappable layer groups before the output, plus ``final``."""
    groups = backbone.contract.layer_groups[:-1]
    if isinstance(backbone.module, TextEncoder):
        tappable = [g.name for g in groups if re.fullmatch(r"layer\d+", g.name)]
    else:
        tappable = [g.name for g in groups if _module_name(g.patterns)]
    return tappable[-count:] + [FINAL]


def _masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


class _ImageTaps(nn.Module):
    """Runs the network once; returns pooled outputs of the tapped modules and the final features."""

    def __init__(self, network: nn.Module, modules: list[str], final: bool) -> None:
        super().__init__()
        self.network, self.names, self.final = network, modules, final
        self._seen: dict[str, torch.Tensor] = {}
        lookup = dict(network.named_modules())
        for name in modules:
            lookup[name].register_forward_hook(self._keep(name))

    def _keep(self, name: str):
        def hook(module, inputs, output):
            self._seen[name] = output.mean(dim=(2, 3)) if output.dim() == 4 else output.flatten(1)
        return hook

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        final = self.network(images)
        parts = [self._seen.pop(name) for name in self.names] + ([final] if self.final else [])
        return torch.cat(parts, dim=1)


class _TextTaps(nn.Module):
    """Masked mean of the hidden states after the tapped transformer layers."""

    def __init__(self, encoder: TextEncoder, layer_indices: list[int], final: bool) -> None:
        super().__init__()
        self.encoder, self.indices, self.final = encoder, layer_indices, final

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        out = self.encoder.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                   output_hidden_states=True, **extra)
        parts = [_masked_mean(out.hidden_states[i + 1], attention_mask) for i in self.indices]
        if self.final:
            parts.append(self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra))
        return torch.cat(parts, dim=1)


def tap_layers(backbone: Backbone, layers: list[str]) -> tuple[Backbone, list[tuple[str, slice]]]:
    """A backbone whose features are the given layers side by side, and each layer's columns.

    ``layers`` are layer-group names of the contract, or ``final`` for the usual features.
    """
    groups = {g.name: g for g in backbone.contract.layer_groups}
    unknown = [name for name in layers if name != FINAL and name not in groups]
    if unknown:
        raise ConfigError(f"{backbone.name} has no layer group {', '.join(map(repr, unknown))}; "
                          f"its groups are: {', '.join(groups)}, and '{FINAL}'.")
    tapped = [name for name in layers if name != FINAL]
    final = FINAL in layers
    if isinstance(backbone.module, TextEncoder):
        numbered = [int(name.removeprefix("layer")) for name in tapped if re.fullmatch(r"layer\d+", name)]
        if len(numbered) != len(tapped):
            raise ConfigError("Text backbones can tap transformer layers only (layer0, layer1, ...).")
        module: nn.Module = _TextTaps(backbone.module, numbered, final)
        widths = [backbone.contract.feature_dim] * len(layers)
    else:
        names = [_module_name(groups[name].patterns) for name in tapped]
        if None in names:
            raise ConfigError(f"Layer groups made of several modules cannot be tapped: {tapped}.")
        module = _ImageTaps(backbone.module, names, final)
        widths = _widths_from(module.eval(), backbone.contract.input_size or 224)
    columns, start = [], 0
    for name, width in zip(tapped + ([FINAL] if final else []), widths):
        columns.append((name, slice(start, start + width)))
        start += width
    contract = replace(backbone.contract, feature_dim=start)
    tapped_backbone = replace(backbone, name=f"{backbone.name}@{'+'.join(layers)}", module=module,
                              contract=contract, source_head=None)
    return tapped_backbone, columns


def _widths_from(module: _ImageTaps, size: int) -> list[int]:
    """Width of each tapped output, found by one forward pass on a blank image."""
    with torch.inference_mode():
        final = module.network(torch.zeros(1, 3, size, size))
        widths = [int(module._seen.pop(name).shape[1]) for name in module.names]
    return widths + ([int(final.shape[1])] if module.final else [])
