"""MMD: fine-tuning with a multi-kernel maximum mean discrepancy between source and target features.

Long, Cao, Wang and Jordan, "Learning Transferable Features with Deep Adaptation Networks"
(ICML 2015). The squared MMD under a sum of Gaussian kernels is zero when the two feature
distributions match; adding it to the loss pulls the backbone's target features onto the
source's. Bandwidths follow the median heuristic, spread by powers of ``kernel_mul``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader

from ..training import Trainer
from .base import register_adaptation
from .configs import MmdConfig
from .target_batches import TargetFeatureLoss, TargetLossMethod

if TYPE_CHECKING:
    from ..strategies.base import FitJob

__all__ = ["Mmd", "MmdConfig", "multi_kernel_mmd", "MmdLoss"]


def multi_kernel_mmd(source: torch.Tensor, target: torch.Tensor, kernels: int = 5, kernel_mul: float = 2.0) -> torch.Tensor:
    """Squared MMD (biased estimate) between two samples under a sum of Gaussian kernels.

    The middle kernel's bandwidth is the median squared distance between all points
    (median heuristic, not back-propagated); the others are it times kernel_mul**k.
    """
    both = torch.cat([source, target]).float()
    distances = torch.cdist(both, both).pow(2)
    n = len(both)
    off_diagonal = distances.detach()[~torch.eye(n, dtype=torch.bool, device=both.device)]
    median = off_diagonal.median().clamp_min(1e-12)
    kernel = sum(torch.exp(-distances / (median * kernel_mul ** (k - kernels // 2))) for k in range(kernels))
    s = len(source)
    return kernel[:s, :s].mean() + kernel[s:, s:].mean() - 2 * kernel[:s, s:].mean()


class MmdLoss(TargetFeatureLoss):
    """The multi-kernel MMD between a batch's source features and a target batch's features."""

    def __init__(self, config: MmdConfig, target_loader: DataLoader) -> None:
        super().__init__(target_loader)
        self.config = config

    def loss(self, trainer: Trainer, features: torch.Tensor, progress: float) -> torch.Tensor:
        target = self.target_features(trainer)
        return self.config.weight * multi_kernel_mmd(features, target, self.config.kernels, self.config.kernel_mul)


@register_adaptation
class Mmd(TargetLossMethod):
    """Fine-tuning with an MMD penalty between source and target features in the loop."""

    name, config_class = "mmd", MmdConfig

    def loss_callback(self, job: FitJob, target_loader: DataLoader) -> MmdLoss:
        return MmdLoss(self.config, target_loader)
