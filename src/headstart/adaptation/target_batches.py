"""The base of adaptation losses that compare source features with target features.

DANN and MMD are loop callbacks: in ``on_loss`` they see each training batch's source
features, draw one unlabelled target batch from their own loader, pass it through the same
backbone, and add their term under the name "auxiliary" (``train_auxiliary_loss`` in the
history). ``make_target_loader`` builds that loader the way the training loader is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader

from .. import distributed
from ..config import Config
from ..data import labelled_loader, set_loader_epoch
from ..training import Callback, Trainer, TrainingStep
from .base import AdaptationMethod

if TYPE_CHECKING:
    from ..strategies.base import FitJob

__all__ = ["TargetFeatureLoss", "TargetLossMethod", "ganin_schedule", "make_target_loader"]


def ganin_schedule(progress: float, gamma: float = 10.0) -> float:
    """Ganin et al.'s ramp 2/(1+exp(-gamma p))-1: 0 at the start, near 1 by the end.

    It keeps the adaptation signal quiet while the features and head are still noisy.
    """
    return float(2.0 / (1.0 + torch.exp(torch.tensor(-gamma * progress))) - 1.0)


def make_target_loader(job: FitJob, config: Config) -> DataLoader:
    """Augmented, shuffled batches of the job's target, with the training options in ``config``
    (a network strategy's TrainingConfig: batch size, RandAugment policy, smallest crop)."""
    contract = job.backbone.contract
    workers = job.num_workers if contract.modality == "image" else 0
    world = distributed.current()
    return labelled_loader(job.target, contract, tokenizer=job.backbone.tokenizer, train=True,
                           batch_size=distributed.micro_batch(config.batch_size, config.accumulate, world.size),
                           num_workers=workers, randaugment=config.randaugment, min_crop=config.min_crop,
                           world=world, seed=job.seed + 1)


class TargetFeatureLoss(Callback):
    """Draws target batches (restarted each epoch, after the run seeded it) and embeds them;
    subclasses compute their term in :meth:`loss`."""

    def __init__(self, target_loader: DataLoader) -> None:
        self.target_loader = target_loader
        self._batches = None

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        set_loader_epoch(self.target_loader, epoch)
        self._batches = iter(self.target_loader)

    def target_features(self, trainer: Trainer) -> torch.Tensor:
        """Backbone features of the next target batch (the target loader restarts when spent)."""
        if self._batches is None:
            self._batches = iter(self.target_loader)
        try:
            inputs, _ = next(self._batches)
        except StopIteration:
            self._batches = iter(self.target_loader)
            inputs, _ = next(self._batches)
        return trainer.net.features(trainer.to_device(inputs))

    def on_loss(self, trainer: Trainer, step: TrainingStep) -> None:
        step.add_loss("auxiliary", self.loss(trainer, step.features, step.progress))

    def loss(self, trainer: Trainer, features: torch.Tensor, progress: float) -> torch.Tensor:
        """The term for a batch of source ``features`` at ``progress`` (0 to 1) of training."""
        raise NotImplementedError


class TargetLossMethod(AdaptationMethod):
    """A method that fine-tunes with one extra loss on source and target features (dann, mmd):
    it composes with the strategies that train the backbone from a pre-trained start."""

    strategies = ("finetune", "lp-ft")

    def loss_callback(self, job: FitJob, target_loader: DataLoader) -> TargetFeatureLoss:
        raise NotImplementedError

    def training_callbacks(self, job: FitJob, config: Config) -> list[Callback]:
        return [self.loss_callback(job, make_target_loader(job, config))]
