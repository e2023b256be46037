"""One readable training loop. Cross-cutting behaviour (early stopping, checkpoints,
unfreezing schedules, progress) plugs in as callbacks, as in Lightning."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..errors import HeadstartError
from ..evaluation import classification_metrics

__all__ = ["TransferNet", "LoopSettings", "Trainer", "Callback", "AuxiliaryLoss", "TrainingDiverged", "seed_everything"]

log = logging.getLogger(__name__)


class TrainingDiverged(HeadstartError):
    """The loss became NaN or infinite."""


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, so a run repeats exactly on the same machine."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class TransferNet(nn.Module):
    """A backbone, dropout, and a new classification head."""

    def __init__(self, backbone: nn.Module, head: nn.Module, dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone, self.dropout, self.head = backbone, nn.Dropout(dropout), head

    def features(self, inputs) -> torch.Tensor:
        """The backbone's feature vectors of a batch (what the head sees, before dropout)."""
        return self.backbone(**inputs) if isinstance(inputs, dict) else self.backbone(inputs)

    def forward(self, inputs) -> torch.Tensor:
        return self.head(self.dropout(self.features(inputs)))


@dataclass
class LoopSettings:
    """What the loop needs; strategies fill it from their configs."""

    epochs: int = 5
    warmup_epochs: float = 0.5
    clip_norm: float | None = 1.0
    label_smoothing: float = 0.0
    l2sp: float = 0.0
    device: str = "cpu"
    channels_last: bool = False
    amp: bool = True  # used on CUDA only: bf16 where supported, else fp16 with loss scaling
    class_weights: list[float] | None = None
    monitor: str = "val_f1"
    train_bn: bool = True  # False: every BatchNorm keeps its running statistics (eval mode)


class Callback:
    """Hooks the trainer calls; override what you need."""

    def on_fit_start(self, trainer: Trainer) -> None: ...
    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None: ...
    def on_batch_end(self, trainer: Trainer, step: int, steps: int) -> None: ...
    def on_epoch_end(self, trainer: Trainer, epoch: int, row: dict) -> None: ...
    def on_fit_end(self, trainer: Trainer) -> None: ...
    def state_dict(self) -> dict:
        return {}
    def load_state_dict(self, state: dict) -> None: ...


class AuxiliaryLoss(Callback):
    """An extra loss term computed from each training batch's features (domain adaptation uses it).

    The trainer calls it inside the step with the batch's backbone features and the share of
    training done so far (0 to 1); its ``parameters()`` join the optimizer. Being a callback, it
    can also keep state across epochs and into checkpoints.
    """

    def parameters(self) -> list[nn.Parameter]:
        return []

    def __call__(self, trainer: Trainer, features: torch.Tensor, progress: float) -> torch.Tensor:
        raise NotImplementedError


def warmup_cosine(total_steps: int, warmup_steps: int):
    """Linear warm-up to the base rate, then cosine decay to zero."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


@dataclass
class Trainer:
    """Trains a :class:`TransferNet`; ``history`` holds one row of metrics per epoch."""

    net: TransferNet
    optimizer: torch.optim.Optimizer
    settings: LoopSettings
    classes: list[str]
    callbacks: list[Callback] = field(default_factory=list)
    auxiliary: AuxiliaryLoss | None = None
    history: list[dict] = field(default_factory=list)
    epoch: int = 0
    should_stop: bool = False

    def __post_init__(self) -> None:
        self.device = torch.device(self.settings.device)
        self.net.to(self.device)
        if self.settings.channels_last:
            self.net.to(memory_format=torch.channels_last)
        weights = (torch.tensor(self.settings.class_weights, device=self.device)
                   if self.settings.class_weights else None)
        self.loss_fn = nn.CrossEntropyLoss(weight=weights, label_smoothing=self.settings.label_smoothing)
        self.anchor = {n: p.detach().clone() for n, p in self.net.backbone.named_parameters()} if self.settings.l2sp else {}
        cuda = self.device.type == "cuda" and self.settings.amp
        self.amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cuda else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.scheduler = None

    # -- pieces --------------------------------------------------------------------------
    def to_device(self, inputs):
        """Move a batch (tensor or tokenizer dict) to the training device, in the memory format used."""
        if isinstance(inputs, dict):
            return {k: v.to(self.device, non_blocking=True) for k, v in inputs.items()}
        memory = torch.channels_last if self.settings.channels_last else torch.contiguous_format
        return inputs.to(self.device, non_blocking=True, memory_format=memory)

    def _autocast(self):
        return torch.autocast("cuda", dtype=self.amp_dtype) if self.amp_dtype else nullcontext()

    def l2sp_penalty(self) -> torch.Tensor:
        """Squared distance of the trainable backbone weights from their pre-trained values."""
        total = torch.zeros((), device=self.device)
        for name, param in self.net.backbone.named_parameters():
            if param.requires_grad:
                total = total + (param - self.anchor[name]).pow(2).sum()
        return 0.5 * self.settings.l2sp * total

    def set_train_mode(self) -> None:
        """Train mode, except BatchNorm layers that keep their statistics: those of frozen
        groups always, and all of them when ``train_bn`` is off."""
        from .param_groups import frozen_norm_modules

        self.net.train()
        keep = (m for m in self.net.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)) \
            if not self.settings.train_bn else frozen_norm_modules(self.net.backbone)
        for module in keep:
            module.eval()

    # -- epochs --------------------------------------------------------------------------
    def train_epoch(self, loader: Iterable) -> dict:
        self.set_train_mode()
        steps, total_loss, total_auxiliary, predicted, truth = len(loader), 0.0, 0.0, [], []
        for step, (inputs, labels) in enumerate(loader, 1):
            inputs, labels = self.to_device(inputs), labels.to(self.device)
            with self._autocast():
                features = self.net.features(inputs)
                logits = self.net.head(self.net.dropout(features))
                loss = self.loss_fn(logits.float(), labels)
                if self.settings.l2sp:
                    loss = loss + self.l2sp_penalty()
                if self.auxiliary is not None:
                    progress = (self.epoch * steps + step - 1) / (self.settings.epochs * steps)
                    auxiliary = self.auxiliary(self, features, progress)
                    total_auxiliary += auxiliary.item() * len(labels)
                    loss = loss + auxiliary
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"The training loss became {loss.item()} at epoch {self.epoch + 1}, step {step}. "
                    "The last good checkpoint is kept; lower `--lr` or raise `--warmup` and `--resume` the run.")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.settings.clip_norm:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.net.parameters(), self.settings.clip_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.scheduler is not None:
                self.scheduler.step()
            total_loss += loss.item() * len(labels)
            predicted.append(logits.detach().argmax(1).cpu())
            truth.append(labels.cpu())
            for callback in self.callbacks:
                callback.on_batch_end(self, step, steps)
        if not truth:
            return {"train_loss": 0.0, "train_accuracy": 0.0, "train_f1": 0.0}
        seen = classification_metrics(torch.cat(truth).numpy(), torch.cat(predicted).numpy(), self.classes)
        row = {"train_loss": total_loss / seen["samples"], "train_accuracy": seen["accuracy"], "train_f1": seen["f1"]}
        if self.auxiliary is not None:
            row["train_auxiliary_loss"] = total_auxiliary / seen["samples"]
        return row

    @torch.inference_mode()
    def predict_logits(self, loader: Iterable) -> tuple[torch.Tensor, torch.Tensor]:
        self.net.eval()
        logits, labels = [], []
        for inputs, target in loader:
            with self._autocast():
                logits.append(self.net(self.to_device(inputs)).float().cpu())
            labels.append(target)
        return torch.cat(logits), torch.cat(labels)

    def validate(self, loader: Iterable) -> dict:
        logits, labels = self.predict_logits(loader)
        metrics = classification_metrics(labels.numpy(), logits.argmax(1).numpy(), self.classes)
        return {"val_loss": float(nn.functional.cross_entropy(logits, labels)),
                **{f"val_{k}": metrics[k] for k in ("accuracy", "precision", "recall", "f1")}}

    def prepare(self, steps_per_epoch: int) -> None:
        """Create the warm-up + cosine schedule (before a checkpoint is restored into it)."""
        total = self.settings.epochs * steps_per_epoch
        warmup = int(self.settings.warmup_epochs * steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(total, warmup))

    def fit(self, train_loader: Iterable, val_loader: Iterable) -> list[dict]:
        """Train for the configured epochs (continuing from ``self.epoch`` after a resume)."""
        if self.scheduler is None:
            self.prepare(len(train_loader))
        for callback in self.callbacks:
            callback.on_fit_start(self)
        while self.epoch < self.settings.epochs and not self.should_stop:
            for callback in self.callbacks:
                callback.on_epoch_start(self, self.epoch)
            started = time.perf_counter()
            row = {"epoch": self.epoch + 1, **self.train_epoch(train_loader), **self.validate(val_loader),
                   "lr": max(g["lr"] for g in self.optimizer.param_groups)}
            row["seconds"] = round(time.perf_counter() - started, 3)
            self.history.append(row)
            self.epoch += 1
            for callback in self.callbacks:
                callback.on_epoch_end(self, self.epoch, row)
        for callback in self.callbacks:
            callback.on_fit_end(self)
        return self.history
