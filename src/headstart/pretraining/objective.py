"""Training a self-supervised objective with the project's loop.

:class:`ObjectiveTrainer` is the loop's :class:`~headstart.training.Trainer` with the objective's
loss in place of the classification loss: batches are lists of views, an epoch's row records the
mean training loss and the validation loss (drawn with fixed seeds, so epochs compare), and the
loop's callbacks work as in fine-tuning: progress, per-epoch checkpoints and ``resume``, early
stopping on the validation loss (the best epoch's weights kept), seeding per epoch, SIGTERM.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from .. import distributed
from ..training import (Callback, Checkpointing, EarlyStopping, EpochSeeding, LoopSettings, Trainer, TrainingStep,
                        load_checkpoint, optimizer_groups, private_rng, seed_everything)
from .job import Pretrained, PretrainJob

__all__ = ["ObjectiveNet", "ObjectiveTrainer", "train_objective", "epoch_plan"]

VALIDATION_SEED = 20_240_517  # the validation loss of every epoch draws the same views and noise


class ObjectiveNet(nn.Module):
    """The backbone and the objective (which holds the backbone and adds its own parts: a projection
    head, a decoder); the forward pass of a batch of views gives the loss."""

    def __init__(self, backbone: nn.Module, objective: nn.Module) -> None:
        super().__init__()
        self.backbone, self.objective = backbone, objective

    def forward(self, views) -> torch.Tensor:
        return self.objective(views)


class _LossTally:
    """An epoch's mean training loss (and extra loss terms), over micro-batches and ranks."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {"train_loss": 0.0}
        self.samples = 0

    def add(self, loss: torch.Tensor, batch: TrainingStep) -> None:
        count = len(batch.labels)
        self.samples += count
        self.totals["train_loss"] += loss.item() * count
        for name, value in batch.losses.items():
            key = f"train_{name}_loss"
            self.totals[key] = self.totals.get(key, 0.0) + float(value.detach()) * count

    def metrics(self, classes: list[str]) -> dict:
        parts = distributed.gather((self.totals, self.samples))
        samples = sum(part[1] for part in parts)
        totals: dict[str, float] = {}
        for part in parts:
            for key, value in part[0].items():
                totals[key] = totals.get(key, 0.0) + value
        return {**{key: value / max(samples, 1) for key, value in totals.items()}, "samples": samples}


@dataclass
class ObjectiveTrainer(Trainer):
    """The loop, training an :class:`ObjectiveNet`; ``epoch_steps`` caps an epoch's optimizer steps
    (``--steps``)."""

    epoch_steps: int | None = None

    def to_device(self, inputs):
        if isinstance(inputs, (list, tuple)):  # the views of one batch
            return [super(ObjectiveTrainer, self).to_device(view) for view in inputs]
        return super().to_device(inputs)

    def steps_per_epoch(self, loader: Iterable) -> int:
        return min(super().steps_per_epoch(loader), self.epoch_steps or math.inf)

    def new_tally(self) -> _LossTally:
        return _LossTally()

    def forward_step(self, inputs, labels: torch.Tensor, progress: float) -> tuple[torch.Tensor, TrainingStep]:
        """The objective's loss plus every term the callbacks add in ``on_loss``."""
        with self._autocast():
            loss = self.model(inputs).float()
            none = loss.new_zeros((len(labels), 0))
            step = TrainingStep(none, none, labels, progress)
            for callback in self.callbacks:
                callback.on_loss(self, step)
            for value in step.losses.values():
                loss = loss + value
        return loss, step

    @torch.no_grad()
    def validate(self, loader: Iterable | None) -> dict:
        """The objective's mean loss on the validation share, its random views and noise drawn from a
        fixed seed; dropout stays on (SimCSE's noise is dropout), BatchNorm uses its running statistics."""
        if loader is None:
            return {}
        total, count = 0.0, 0
        with private_rng(self.device):
            seed_everything(VALIDATION_SEED)
            self.net.train()
            for module in self.net.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
            for inputs, labels in loader:
                with self._autocast():
                    loss = self.net(self.to_device(inputs)).float()
                total, count = total + loss.item() * len(labels), count + len(labels)
        parts = distributed.gather((total, count))
        return {"val_loss": sum(p[0] for p in parts) / max(sum(p[1] for p in parts), 1)}


def epoch_plan(steps: int | None, epochs: int, batches: int) -> tuple[int, int | None]:
    """(epochs, optimizer steps per epoch or None for whole passes): ``steps`` in all, in as many equal
    epochs of at most one pass as that takes (rounded up to whole epochs of equal length)."""
    if steps is None:
        return epochs, None
    count = math.ceil(steps / max(batches, 1))
    return count, math.ceil(steps / count)


def _parameter_groups(net: ObjectiveNet, lr: float, weight_decay: float, head_scale: float) -> list[dict]:
    """AdamW groups: the backbone at ``lr``, the objective's own new weights at ``lr * head_scale``; no
    decay on biases and norms. A weight the objective shares with the backbone (a tied decoder) is the
    backbone's."""
    everything = {name: 0 for name, _ in net.backbone.named_parameters()}
    groups = optimizer_groups(net.backbone, nn.Module(), everything, 1, lr, 1.0, weight_decay)
    own = {id(p) for p in net.backbone.parameters()}
    new = [(name, p) for name, p in net.objective.named_parameters() if id(p) not in own]
    for decay in (True, False):
        params = [p for name, p in new if (p.ndim > 1 and not name.endswith(".bias")) == decay]
        if params:
            groups.append({"params": params, "lr": lr * head_scale, "lr_scale": head_scale, "name": "objective",
                           "weight_decay": weight_decay if decay else 0.0})
    return groups


class ObjectiveProgress(Callback):
    """Reports training batches, and each epoch's losses, to a ``progress(stage, done, total, note)`` callback."""

    def __init__(self, progress, label: str) -> None:
        self.progress, self.label = progress, label

    def on_batch_end(self, trainer: Trainer, step: int, steps: int) -> None:
        self.progress(f"{self.label} epoch {trainer.epoch + 1}/{trainer.settings.epochs}", step, steps)

    def on_epoch_end(self, trainer: Trainer, epoch: int, row: dict) -> None:
        note = f"loss {row['train_loss']:.3f}" + (f"  val loss {row['val_loss']:.3f}" if "val_loss" in row else "")
        self.progress(f"{self.label} epoch {epoch}/{trainer.settings.epochs}", 1, 1, note)


def train_objective(job: PretrainJob, objective: nn.Module, train_loader, val_loader) -> Pretrained:
    """Train ``objective`` (which holds ``job.backbone.module``) on the loaders; return the backbone
    module (the best validation epoch's weights, when there is a validation share) and the history."""
    config = job.config
    net = ObjectiveNet(job.backbone.module, objective)
    epochs, epoch_steps = epoch_plan(config.steps, config.epochs, len(train_loader))
    settings = LoopSettings(epochs=epochs, warmup_epochs=config.warmup_epochs, clip_norm=config.clip_norm or None,
                            device=str(job.device), channels_last=job.backbone.contract.channels_last, train_bn=True,
                            monitor="val_loss")
    callbacks: list[Callback] = [EpochSeeding(job.seed, [train_loader.generator], [train_loader])]
    if val_loader is not None:
        callbacks.append(EarlyStopping("val_loss", config.patience or None, mode="min"))
    if job.checkpoint is not None:
        callbacks.append(Checkpointing(job.checkpoint))
    if job.progress is not None:
        callbacks.append(ObjectiveProgress(job.progress, type(job.config).owner))
    callbacks.extend(job.callbacks)
    optimizer = torch.optim.AdamW(_parameter_groups(net, config.lr, config.weight_decay, config.head_lr_scale))
    trainer = ObjectiveTrainer(net, optimizer, settings, [], callbacks=callbacks, epoch_steps=epoch_steps)
    trainer.prepare(trainer.steps_per_epoch(train_loader))
    if job.resume and job.checkpoint is not None and job.checkpoint.is_file():
        load_checkpoint(trainer, job.checkpoint)
    trainer.fit(train_loader, val_loader)
    net.eval()
    steps = trainer.steps_per_epoch(train_loader) * len(trainer.history)
    info = {"epochs_run": len(trainer.history), "steps": steps,
            "samples_seen": sum(row["samples"] for row in trainer.history),
            "train_samples": len(job.train), "val_samples": len(job.val) if job.val is not None else 0}
    if val_loader is not None and trainer.history:
        info["best_epoch"] = min(trainer.history, key=lambda row: row["val_loss"])["epoch"]
    return Pretrained(job.backbone.module, trainer.history, info)
