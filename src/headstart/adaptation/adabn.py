"""AdaBN: re-estimate every BatchNorm's statistics on the target domain.

Li, Wang, Shi, Liu and Hou, "Revisiting Batch Normalization For Practical Domain Adaptation"
(2016): the weights learned on the source stay; only the normalisation statistics change, so
each domain is normalised by its own mean and variance. Backbones without BatchNorm (the
transformer text encoders use LayerNorm) cannot use it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ..backbones import Backbone
from ..data import LabelledData, call_module, inference_loader, to_device
from ..errors import ConfigError
from .base import AdaptationMethod, register_adaptation
from .configs import AdaBNConfig

if TYPE_CHECKING:
    from ..strategies.base import FitJob, Strategy

__all__ = ["AdaBN", "AdaBNConfig", "batchnorm_layers", "reestimate_batchnorm", "require_batchnorm",
           "with_batchnorm_statistics"]


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
        call_module(module, to_device(inputs, device))
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
    return module.eval()


def with_batchnorm_statistics(backbone: Backbone, data: LabelledData, *, batch_size: int = 64, num_workers: int = 0,
                              device: torch.device | str = "cpu", module: nn.Module | None = None) -> nn.Module:
    """A copy of ``module`` (default: the backbone's) whose BatchNorm statistics are those of ``data``.

    The batches come from :func:`~headstart.data.inference_loader`, so the statistics describe
    exactly the inputs feature extraction and prediction will feed the network.
    """
    loader = inference_loader(backbone, data.items, batch_size=batch_size, num_workers=num_workers,
                              max_pixels=data.max_pixels)
    return reestimate_batchnorm(copy.deepcopy(module if module is not None else backbone.module), loader, device)


@register_adaptation
class AdaBN(AdaptationMethod):
    """Re-estimate BatchNorm statistics: on the source for a probe's features, on the target at the end.

    Only a linear probe fits its head on source-statistics features: a fine-tuning strategy
    (lp-ft's probe included) starts from the pre-trained statistics, so its head must see those.
    """

    name = "adabn"
    config_class = AdaBNConfig
    strategies = ("linear-probe", "finetune", "lp-ft")

    def check_backbone(self, job: FitJob) -> None:
        require_batchnorm(job.backbone)

    def head_features(self, job: FitJob) -> tuple[np.ndarray, np.ndarray]:
        """With ``source_statistics`` (and a probe), features by a copy normalised with the
        train split's statistics (never cached); else the cached default."""
        if not self.config.source_statistics or job.strategy.trains_backbone:
            return super().head_features(job)
        module = with_batchnorm_statistics(job.backbone, job.train, batch_size=job.batch_size,
                                           num_workers=job.num_workers, device=job.device)
        return (job.features(job.train, "train features", module=module),
                job.features(job.val, "validation features", module=module))

    def after_fit(self, job: FitJob, strategy: Strategy) -> None:
        """The fitted network normalises with the target's statistics."""
        strategy.replace_backbone(with_batchnorm_statistics(
            job.backbone, job.target, batch_size=job.batch_size, num_workers=job.num_workers, device=job.device,
            module=strategy.net_.backbone))
