"""Callbacks: early stopping, gradual unfreezing, per-epoch seeding, checkpoints."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from .loop import Callback, Trainer, seed_everything
from .param_groups import set_trainable

__all__ = ["EarlyStopping", "GradualUnfreezing", "EpochSeeding", "Checkpointing", "load_checkpoint"]

log = logging.getLogger(__name__)


class EpochSeeding(Callback):
    """Seed every random source from (seed, epoch): shuffling, dropout, augmentation workers.

    An interrupted run resumed at epoch k therefore draws exactly what it would have drawn.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        seed_everything(self.seed * 1_000_003 + epoch)


class EarlyStopping(Callback):
    """Stop when the monitored validation metric has not improved for ``patience`` epochs,
    and put the best epoch's weights back at the end."""

    def __init__(self, monitor: str = "val_f1", patience: int | None = 3, mode: str = "max") -> None:
        self.monitor, self.patience, self.mode = monitor, patience, mode
        self.best: float | None = None
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] | None = None

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def on_epoch_end(self, trainer: Trainer, epoch: int, row: dict) -> None:
        value = row[self.monitor]
        if self._better(value):
            self.best, self.best_epoch = value, epoch
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in trainer.net.state_dict().items()}
        elif self.patience is not None and epoch - self.best_epoch >= self.patience:
            log.info("Early stopping at epoch %d: %s has not improved since epoch %d", epoch, self.monitor, self.best_epoch)
            trainer.should_stop = True

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.best_state is not None:
            trainer.net.load_state_dict(self.best_state)

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "best_state": self.best_state}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.best_state = state["best"], state["best_epoch"], state["best_state"]


class GradualUnfreezing(Callback):
    """ULMFiT-style: start with ``start`` top groups trainable, one more every ``every`` epochs,
    up to ``ceiling`` groups."""

    def __init__(self, group_index: dict[str, int], n_groups: int, start: int, every: int, ceiling: int) -> None:
        self.group_index, self.n_groups, self.start, self.every = group_index, n_groups, start, every
        self.ceiling = ceiling

    def trainable_at(self, epoch: int) -> int:
        return min(self.ceiling, self.start + epoch // self.every)

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        set_trainable(trainer.net.backbone, self.group_index, self.n_groups, self.trainable_at(epoch))


class Checkpointing(Callback):
    """Write everything needed to resume after each epoch, atomically (temp file + rename)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_epoch_end(self, trainer: Trainer, epoch: int, row: dict) -> None:
        state = {
            "epoch": trainer.epoch,
            "history": trainer.history,
            "net": trainer.net.state_dict(),
            "optimizer": trainer.optimizer.state_dict(),
            "scheduler": trainer.scheduler.state_dict(),
            "scaler": trainer.scaler.state_dict(),
            "should_stop": trainer.should_stop,
            "callbacks": [c.state_dict() for c in trainer.callbacks],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_suffix(".tmp")
        torch.save(state, temp)
        os.replace(temp, self.path)


def load_checkpoint(trainer: Trainer, path: str | Path) -> None:
    """Restore a trainer (after ``prepare``) to the end of the last checkpointed epoch."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    trainer.net.load_state_dict(state["net"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.scaler.load_state_dict(state["scaler"])
    trainer.epoch, trainer.history, trainer.should_stop = state["epoch"], state["history"], state["should_stop"]
    for callback, saved in zip(trainer.callbacks, state["callbacks"]):
        callback.load_state_dict(saved)
