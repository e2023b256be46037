"""The base of adaptation losses that compare source features with target features.

DANN and MMD see each training batch's source features through the loop's auxiliary-loss
hook and draw one unlabelled target batch per step from their own loader, passed through
the same backbone.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from ..training import AuxiliaryLoss

__all__ = ["TargetFeatureLoss", "ganin_schedule"]


def ganin_schedule(progress: float, gamma: float = 10.0) -> float:
    """Ganin et al.'s ramp 2/(1+exp(-gamma p))-1: 0 at the start, near 1 by the end.

    It keeps the adaptation signal quiet while the features and head are still noisy.
    """
    return float(2.0 / (1.0 + torch.exp(torch.tensor(-gamma * progress))) - 1.0)


class TargetFeatureLoss(AuxiliaryLoss):
    """Draws target batches (restarted each epoch, after the loop seeded it) and embeds them."""

    def __init__(self, target_loader: DataLoader) -> None:
        self.target_loader = target_loader
        self._batches = None

    def on_epoch_start(self, trainer, epoch: int) -> None:
        self._batches = iter(self.target_loader)

    def target_features(self, trainer) -> torch.Tensor:
        """Backbone features of the next target batch (the target loader restarts when spent)."""
        if self._batches is None:
            self._batches = iter(self.target_loader)
        try:
            inputs, _ = next(self._batches)
        except StopIteration:
            self._batches = iter(self.target_loader)
            inputs, _ = next(self._batches)
        return trainer.net.features(trainer.to_device(inputs))
