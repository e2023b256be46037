"""AdaBN: re-estimate every BatchNorm's statistics on the target domain.

Li, Wang, Shi, Liu and Hou, "Revisiting Batch Normalization For Practical Domain Adaptation"
(2016): the weights learned on the source stay; only the normalisation statistics change, so
each domain is normalised by its own mean and variance. Backbones without BatchNorm (the
transformer text encoders use LayerNorm) cannot use it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from ..backbones import Backbone
from ..data import LabelledData, labelled_loader
from ..errors import ConfigError

__all__ = ["AdaBNConfig", "batchnorm_layers", "reestimate_batchnorm", "require_batchnorm", "with_batchnorm_statistics"]


@dataclass
class AdaBNConfig:
    """Options of ``adabn``."""

    method: ClassVar[str] = "adabn"
    source_statistics: bool = field(default=True, metadata={"help": (
        "fit the head on source features computed with statistics re-estimated on the source (as in "
        "the paper); off: the pre-trained statistics and cached features")})


def batchnorm_layers(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of a module (timm's BatchNormAct2d included)."""
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def require_batchnorm(backbone: Backbone) -> None:
    """Raise a ConfigError naming better choices when the backbone has no BatchNorm."""
    if not batchnorm_layers(backbone.module):
        raise ConfigError(f"adabn re-estimates BatchNorm statistics, but backbone '{backbone.name}' has no BatchNorm "
                          "layer (it normalises with LayerNorm or none). Use `--method coral` (aligns features, "
                          "any backbone), or `mmd` / `dann` (fine-tune with the target).")


@torch.no_grad()
def reestimate_batchnorm(module: nn.Module, batches: Iterable, device: torch.device | str = "cpu") -> nn.Module:
    """Replace, in place, every BatchNorm's running statistics by the exact average over ``batches``.

    ``batches`` yields model inputs (tensors, tokenizer dicts, or ``(inputs, labels)`` pairs);
    weights, dropout and everything else stay as they are. Returns the module, in eval mode.
    """
    module.to(device).eval()
    layers = batchnorm_layers(module)
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over all batches, not an exponential one
        layer.train()
    for batch in batches:
        inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
        if isinstance(inputs, dict):
            module(**{k: v.to(device) for k, v in inputs.items()})
        else:
            module(inputs.to(device))
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
    return module.eval()


def with_batchnorm_statistics(backbone: Backbone, data: LabelledData, *, batch_size: int = 64, num_workers: int = 0,
                              device: torch.device | str = "cpu", module: nn.Module | None = None) -> nn.Module:
    """A copy of ``module`` (default: the backbone's) whose BatchNorm statistics are those of ``data``,
    prepared with the backbone's evaluation transform."""
    contract = backbone.contract
    loader = labelled_loader(data, contract, tokenizer=backbone.tokenizer, train=False, batch_size=batch_size,
                             num_workers=num_workers if contract.modality == "image" else 0)
    return reestimate_batchnorm(copy.deepcopy(module if module is not None else backbone.module), loader, device)
