"""DANN: fine-tuning with a domain classifier behind a gradient-reversal layer.

Ganin et al., "Domain-Adversarial Training of Neural Networks" (JMLR 2016). A small network
learns to tell source features from target features; the gradient it sends back into the
backbone is reversed (and scaled by a coefficient that ramps from 0 to 1), so the backbone
learns features the domain classifier cannot separate while the head keeps them useful.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..training import Trainer
from .base import register_adaptation
from .configs import DannConfig
from .target_batches import TargetFeatureLoss, TargetLossMethod, ganin_schedule

if TYPE_CHECKING:
    from ..strategies.base import FitJob

__all__ = ["Dann", "DannConfig", "GradientReversal", "reverse_gradient", "DomainAdversarialLoss"]


class GradientReversal(torch.autograd.Function):
    """Identity on the way forward; multiplies the gradient by ``-coefficient`` on the way back."""

    @staticmethod
    def forward(ctx, features: torch.Tensor, coefficient: float) -> torch.Tensor:
        ctx.coefficient = coefficient
        return features.view_as(features)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.coefficient * grad, None


def reverse_gradient(features: torch.Tensor, coefficient: float = 1.0) -> torch.Tensor:
    """Apply :class:`GradientReversal`."""
    return GradientReversal.apply(features, coefficient)


def domain_classifier(in_dim: int, hidden: int) -> nn.Module:
    """Ganin's domain classifier: two hidden ReLU layers with dropout, one logit (target = 1)."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(0.5), nn.Linear(hidden, 1))


class DomainAdversarialLoss(TargetFeatureLoss):
    """Binary cross-entropy of the domain classifier on reversed source and target features."""

    def __init__(self, config: DannConfig, feature_dim: int, target_loader: DataLoader) -> None:
        super().__init__(target_loader)
        self.config = config
        self.classifier = domain_classifier(feature_dim, config.hidden)
        self.coefficient = 0.0

    def parameters(self) -> list[nn.Parameter]:
        return list(self.classifier.parameters())

    def on_fit_start(self, trainer: Trainer) -> None:
        self.classifier.to(trainer.device).train()

    def loss(self, trainer: Trainer, features: torch.Tensor, progress: float) -> torch.Tensor:
        target = self.target_features(trainer)
        self.coefficient = ganin_schedule(progress, self.config.gamma)
        both = reverse_gradient(torch.cat([features, target]), self.coefficient)
        logits = self.classifier(both).squeeze(1).float()
        domains = torch.cat([torch.zeros(len(features)), torch.ones(len(target))]).to(logits.device)
        return self.config.weight * nn.functional.binary_cross_entropy_with_logits(logits, domains)

    def state_dict(self) -> dict:
        return {"classifier": self.classifier.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.classifier.load_state_dict(state["classifier"])


@register_adaptation
class Dann(TargetLossMethod):
    """Domain-adversarial fine-tuning: a domain classifier's reversed gradient joins the loop."""

    name, config_class = "dann", DannConfig

    def loss_callback(self, job: FitJob, target_loader: DataLoader) -> DomainAdversarialLoss:
        with torch.random.fork_rng(devices=[]):  # the classifier starts from the run's seed, not the global state
            torch.manual_seed(job.seed)
            return DomainAdversarialLoss(self.config, job.backbone.contract.feature_dim, target_loader)
