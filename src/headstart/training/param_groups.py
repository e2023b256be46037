"""Parameters by layer group: freezing, discriminative learning rates, weight-decay groups.

Layer groups come from the backbone's contract (ordered input to output). Freezing keeps
BatchNorm layers of frozen groups in eval mode, so their running statistics stay as
pre-trained (Lightning's ``freeze(train_bn=False)``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

from torch import nn

from ..contract import LayerGroup
from ..errors import ConfigError

__all__ = ["group_of_parameters", "trainable_groups", "set_trainable", "optimizer_groups", "frozen_norm_modules"]

log = logging.getLogger(__name__)


def group_of_parameters(backbone: nn.Module, groups: tuple[LayerGroup, ...]) -> dict[str, int]:
    """Map each backbone parameter name to the index of its layer group.

    A parameter no pattern matches joins the group above its neighbour in order (the
    fallback keeps every parameter assigned, never silently untrained or frozen).
    """
    compiled = [[re.compile(p) for p in g.patterns] for g in groups]
    index: dict[str, int] = {}
    last = 0
    for name, _ in backbone.named_parameters():
        found = next((i for i, pats in enumerate(compiled) if any(p.match(name) for p in pats)), None)
        index[name] = last if found is None else found
        last = index[name]
    return index


def trainable_groups(n_groups: int, unfreeze: str | int) -> int:
    """How many of the top groups train: ``all`` or a count, with a warning past the total."""
    if unfreeze == "all":
        return n_groups
    count = int(unfreeze)
    if count < 0:
        raise ConfigError(f"The 'unfreeze' option of finetune must be 'all' or an int >= 0. Got {unfreeze} instead.")
    if count > n_groups:
        log.warning("Asked to unfreeze %d layer groups, but the backbone has %d: unfreezing all.", count, n_groups)
    return min(count, n_groups)


def set_trainable(backbone: nn.Module, group_index: dict[str, int], n_groups: int, n_trainable: int) -> None:
    """Train the last ``n_trainable`` groups; freeze the rest."""
    first = n_groups - n_trainable
    for name, param in backbone.named_parameters():
        param.requires_grad_(group_index[name] >= first)


def frozen_norm_modules(backbone: nn.Module) -> Iterator[nn.Module]:
    """Normalisation layers whose parameters are all frozen: they stay in eval mode."""
    for module in backbone.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                yield module


def _no_decay(name: str, param: nn.Parameter) -> bool:
    return param.ndim <= 1 or name.endswith(".bias")


def optimizer_groups(backbone: nn.Module, head: nn.Module, group_index: dict[str, int], n_groups: int,
                     lr: float, layer_decay: float, weight_decay: float, head_scale: float = 1.0) -> list[dict]:
    """AdamW parameter groups: the top layer group trains at ``lr``, each group below at the rate
    of the one above times ``layer_decay``, the head at ``lr * head_scale``; no weight decay on
    biases and norm parameters.

    Every group is listed, frozen ones included, so gradual unfreezing needs no new optimizer.
    """
    buckets: dict[tuple[str, bool], dict] = {}

    def add(key: str, scale: float, name: str, param: nn.Parameter) -> None:
        decay = not _no_decay(name, param)
        bucket = buckets.setdefault((key, decay), {"params": [], "lr": lr * scale, "lr_scale": scale,
                                                   "weight_decay": weight_decay if decay else 0.0,
                                                   "name": f"{key}{'' if decay else '/no_decay'}"})
        bucket["params"].append(param)

    for name, param in backbone.named_parameters():
        group = group_index[name]
        add(f"group{group}", layer_decay ** (n_groups - 1 - group), name, param)
    for name, param in head.named_parameters():
        add("head", head_scale, name, param)
    return list(buckets.values())
