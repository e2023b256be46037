"""Callbacks: early stopping, gradual unfreezing, per-epoch seeding, L2-SP, checkpoints."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from .. import distributed
from ..data import set_loader_epoch
from ..errors import DataError, OutputError, describe_os_error
from .loop import Callback, Trainer, TrainingStep, seed_everything
from .param_groups import set_trainable

__all__ = ["EarlyStopping", "TimeLimit", "GradualUnfreezing", "EpochSeeding", "L2SP", "Checkpointing", "load_checkpoint",
           "state_keys"]

log = logging.getLogger(__name__)


class EpochSeeding(Callback):
    """Seed every random source of the run from (seed, epoch, rank) at each epoch's start: the
    given loaders' training order (:func:`~headstart.data.set_loader_epoch`), the given generators
    (worker seeds) and the trainer's private copy of the global ones (dropout, augmentation in the
    main process).

    An interrupted run resumed at epoch k therefore draws exactly what it would have drawn,
    and the caller's global random state is left alone (the trainer forks it for the fit). The
    training order does not depend on the rank (each rank takes its share of one permutation);
    augmentation and dropout do, so that ranks do not draw the same crops.
    """

    def __init__(self, seed: int, generators: Sequence[torch.Generator] = (), loaders: Sequence = ()) -> None:
        self.seed, self.generators, self.loaders = seed, list(generators), list(loaders)

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        epoch_seed = self.seed * 1_000_003 + epoch + trainer.world.rank * 7_777_777_777
        seed_everything(epoch_seed % 2**63)
        for number, generator in enumerate(self.generators, 1):  # streams apart from the global one
            generator.manual_seed((epoch_seed * 7_919 + number) % 2**63)
        for loader in self.loaders:
            set_loader_epoch(loader, epoch)


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


class TimeLimit(Callback):
    """Stop before an epoch that would end after the time left runs out, the last epoch's duration
    predicting the next one's (training inside a budget, as ``headstart auto`` does)."""

    def __init__(self, seconds_left: Callable[[], float]) -> None:
        self.seconds_left = seconds_left
        self.stopped_at: int | None = None

    def on_epoch_end(self, trainer: Trainer, epoch: int, row: dict) -> None:
        if epoch < trainer.settings.epochs and row["seconds"] > self.seconds_left():
            log.info("Stopping after epoch %d: the next would overrun the time budget", epoch)
            trainer.should_stop, self.stopped_at = True, epoch


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


class L2SP(Callback):
    """L2-SP (Li et al., ICML 2018): ``0.5 * strength * sum((w - w0)^2)`` over the trainable
    backbone weights, pulling them towards their pre-trained values ``w0``.

    The anchors are taken when the callback is made, before a checkpoint is restored, so a
    resumed run anchors at the same pre-trained weights without storing them.
    """

    def __init__(self, strength: float, backbone: nn.Module) -> None:
        self.strength = strength
        self.anchor = {name: w.detach().clone() for name, w in backbone.named_parameters()}

    def on_fit_start(self, trainer: Trainer) -> None:
        self.anchor = {name: w.to(trainer.device) for name, w in self.anchor.items()}

    def on_loss(self, trainer: Trainer, step: TrainingStep) -> None:
        total = torch.zeros((), device=trainer.device)
        for name, param in trainer.net.backbone.named_parameters():
            if param.requires_grad:
                total = total + (param - self.anchor[name]).pow(2).sum()
        step.add_loss("l2sp", 0.5 * self.strength * total)


def state_keys(callbacks: Sequence[Callback]) -> list[str]:
    """Each callback's name in a checkpoint: its ``state_key``, with ``#2``, ``#3``... on repeats."""
    seen: dict[str, int] = {}
    keys = []
    for callback in callbacks:
        base = callback.state_key
        seen[base] = seen.get(base, 0) + 1
        keys.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    return keys


class Checkpointing(Callback):
    """Write everything needed to resume after each epoch, atomically (temp file + rename); in a
    job of several processes rank 0 writes it (every rank holds the same weights).

    Callback states are stored by :func:`state_keys`, so the callback list may change order.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_epoch_end(self, trainer: Trainer, epoch: int, row: dict) -> None:
        if not trainer.world.is_main:
            return
        state = {
            "epoch": trainer.epoch,
            "processes": trainer.world.size,
            "history": trainer.history,
            "net": trainer.net.state_dict(),
            "optimizer": trainer.optimizer.state_dict(),
            "scheduler": trainer.scheduler.state_dict(),
            "scaler": trainer.scaler.state_dict(),
            "should_stop": trainer.should_stop,
            "callbacks": {key: c.state_dict() for key, c in zip(state_keys(trainer.callbacks), trainer.callbacks)},
        }
        temp = self.path.with_suffix(".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(state, temp)
            os.replace(temp, self.path)
        except (OSError, RuntimeError) as exc:  # torch reports a full disk as a RuntimeError
            temp.unlink(missing_ok=True)
            raise OutputError(f"Cannot write the checkpoint {self.path}: {describe_os_error(exc)}. "
                              "The previous epoch's checkpoint is kept.") from None


def _read_checkpoint(path: Path) -> dict | str:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds on a truncated or foreign file
        return describe_os_error(exc)


def load_checkpoint(trainer: Trainer, path: str | Path) -> None:
    """Restore a trainer (after ``prepare``) to the end of the last checkpointed epoch.

    Rank 0 reads the file and sends it to the other ranks (which need not see the same disk).
    Callbacks get their state by name; one without saved state keeps its own. A checkpoint of
    an older version lists the states by position instead, and is read that way.
    """
    state = distributed.broadcast(_read_checkpoint(Path(path)) if trainer.world.is_main else None)
    try:
        if isinstance(state, str):
            raise ValueError(state)
        _note_processes(state.get("processes", 1), trainer.world.size)
        trainer.net.load_state_dict(state["net"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.scheduler.load_state_dict(state["scheduler"])
        trainer.scaler.load_state_dict(state["scaler"])
        trainer.epoch, trainer.history, trainer.should_stop = state["epoch"], state["history"], state["should_stop"]
        saved = state["callbacks"]
    except Exception as exc:  # a truncated or foreign file
        raise DataError(f"The checkpoint {path} is damaged or does not match this run ({describe_os_error(exc)}); "
                        f"it cannot be resumed. Remove {Path(path).parent} and fit again.") from None
    if isinstance(saved, list):
        pairs = zip(trainer.callbacks, saved)
    else:
        pairs = ((c, saved[key]) for key, c in zip(state_keys(trainer.callbacks), trainer.callbacks) if key in saved)
    for callback, callback_state in pairs:
        callback.load_state_dict(callback_state)


def _note_processes(saved: int, now: int) -> None:
    """Say when a run resumes under another number of processes, and why that is safe."""
    if saved != now:
        log.warning("The checkpoint was written by %d process(es); resuming with %d. The global batch "
                    "(--train-batch) and the order of samples do not depend on the number of processes, so "
                    "training continues as it would have, up to floating-point noise and BatchNorm statistics "
                    "(computed per process).", saved, now)
