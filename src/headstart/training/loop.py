"""One readable training loop. Cross-cutting behaviour (early stopping, checkpoints,
unfreezing schedules, extra loss terms, progress) plugs in as callbacks, as in fastai.

Events of one fit, in order: ``on_fit_start``; per epoch ``on_epoch_start``; per batch
``on_loss`` (inside autocast, where callbacks add loss terms), ``after_backward`` (before the
optimizer step), ``on_batch_end``; then ``on_epoch_end``; finally ``on_fit_end``.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .. import distributed
from ..allocator import keep_freed_memory
from ..data import to_device
from ..errors import HeadstartError
from ..evaluation import classification_metrics

__all__ = ["TransferNet", "LoopSettings", "Trainer", "TrainingStep", "Callback", "TrainingDiverged",
           "seed_everything", "private_rng"]

log = logging.getLogger(__name__)


class TrainingDiverged(HeadstartError):
    """The loss became NaN or infinite."""


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, so a run repeats exactly on the same machine."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def private_rng(device: torch.device | str = "cpu") -> Iterator[None]:
    """Run a block on copies of the global generators (torch's CPU one and the CUDA device's,
    Python's, NumPy's): whatever it seeds or draws, the caller's random state is as before."""
    device = torch.device(device)
    python, numpy = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy)


class TransferNet(nn.Module):
    """A backbone, dropout, and a new classification head."""

    def __init__(self, backbone: nn.Module, head: nn.Module, dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone, self.dropout, self.head = backbone, nn.Dropout(dropout), head

    def features(self, inputs) -> torch.Tensor:
        """The backbone's feature vectors of a batch (what the head sees, before dropout)."""
        return self.backbone(**inputs) if isinstance(inputs, dict) else self.backbone(inputs)

    def forward(self, inputs, with_features: bool = False):
        """The logits; with ``with_features``, ``(features, logits)`` (the loop's callbacks need both,
        and under DistributedDataParallel both must come from one forward call)."""
        features = self.features(inputs)
        logits = self.head(self.dropout(features))
        return (features, logits) if with_features else logits


@dataclass
class LoopSettings:
    """What the loop needs; strategies fill it from their configs."""

    epochs: int = 5
    warmup_epochs: float = 0.5
    clip_norm: float | None = 1.0
    label_smoothing: float = 0.0
    device: str = "cpu"
    channels_last: bool = False
    amp: bool = True  # used on CUDA only: bf16 where supported, else fp16 with loss scaling
    class_weights: list[float] | None = None
    monitor: str = "val_f1"
    train_bn: bool = True  # False: every BatchNorm keeps its running statistics (eval mode)
    accumulate: int = 1  # micro-batches per optimizer step (gradient accumulation)


@dataclass
class TrainingStep:
    """One training batch as ``Callback.on_loss`` sees it.

    ``progress`` is the share of training done (0 to 1), for schedules such as DANN's ramp.
    Terms given to :meth:`add_loss` join the loss; the epoch's history row records each
    name's mean as ``train_{name}_loss``.
    """

    features: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor
    progress: float
    losses: dict[str, torch.Tensor] = field(default_factory=dict)

    def add_loss(self, name: str, value: torch.Tensor) -> None:
        """Add ``value`` (a scalar) to this batch's loss under ``name`` (terms of one name sum)."""
        if not name.isidentifier():
            raise ValueError(f"A loss term's name must be a word such as 'l2sp'. Got {name!r}.")
        self.losses[name] = self.losses[name] + value if name in self.losses else value


class Callback:
    """Hooks the trainer calls; override what you need.

    ``parameters()`` are weights the callback trains (a domain classifier); the code that
    builds the optimizer adds them. ``state_key`` names the callback's state in a checkpoint.
    """

    def on_fit_start(self, trainer: Trainer) -> None: ...
    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None: ...
    def on_loss(self, trainer: Trainer, step: TrainingStep) -> None: ...
    def after_backward(self, trainer: Trainer) -> None: ...
    def on_batch_end(self, trainer: Trainer, step: int, steps: int) -> None: ...
    def on_epoch_end(self, trainer: Trainer, epoch: int, row: dict) -> None: ...
    def on_fit_end(self, trainer: Trainer) -> None: ...

    def parameters(self) -> list[nn.Parameter]:
        return []

    @property
    def state_key(self) -> str:
        return type(self).__name__

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


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
    """Trains a :class:`TransferNet`; ``history`` holds one row of metrics per epoch.

    Under a launcher (see :mod:`headstart.distributed`) the net trains wrapped in
    DistributedDataParallel: each rank runs its shard of every batch, gradients are averaged, and
    every epoch's metrics are computed over all ranks' samples, so every rank holds the same
    history and makes the same early-stopping decision. ``settings.accumulate`` micro-batches
    make one optimizer step.
    """

    net: TransferNet
    optimizer: torch.optim.Optimizer
    settings: LoopSettings
    classes: list[str]
    callbacks: list[Callback] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    epoch: int = 0
    should_stop: bool = False

    def __post_init__(self) -> None:
        self.device = torch.device(self.settings.device)
        self.world = distributed.current()
        self.net.to(self.device)
        if self.settings.channels_last:
            self.net.to(memory_format=torch.channels_last)
        weights = (torch.tensor(self.settings.class_weights, device=self.device)
                   if self.settings.class_weights else None)
        self.loss_fn = nn.CrossEntropyLoss(weight=weights, label_smoothing=self.settings.label_smoothing)
        cuda = self.device.type == "cuda" and self.settings.amp
        self.amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cuda else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.scheduler = None
        self.model: nn.Module = self.net  # what the forward pass calls: the net, or its DDP wrapper
        self._wrapped_trainable: tuple[bool, ...] | None = None

    # -- pieces --------------------------------------------------------------------------
    def to_device(self, inputs):
        """Move a batch (tensor or tokenizer dict) to the training device, in the memory format used."""
        return to_device(inputs, self.device, channels_last=self.settings.channels_last, non_blocking=True)

    def _autocast(self):
        return torch.autocast("cuda", dtype=self.amp_dtype) if self.amp_dtype else nullcontext()

    def set_train_mode(self) -> None:
        """Train mode, except BatchNorm layers that keep their statistics: those of frozen
        groups always, and all of them when ``train_bn`` is off."""
        from .param_groups import frozen_norm_modules

        self.net.train()
        keep = (m for m in self.net.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)) \
            if not self.settings.train_bn else frozen_norm_modules(self.net.backbone)
        for module in keep:
            module.eval()

    def wrap(self) -> None:
        """Under a launcher, make the next step a probing one whenever the set of trainable weights
        changed (at the start, and with gradual unfreezing): DistributedDataParallel averages only
        the weights that trained when it was made. See :meth:`_average_probe`."""
        trainable = tuple(p.requires_grad for p in self.net.parameters())
        if self.world.size > 1 and trainable != self._wrapped_trainable:
            self.model, self._wrapped_trainable = self.net, trainable

    def _average_probe(self) -> None:
        """The first step after :meth:`wrap` runs the bare net and averages its gradients in one
        all-reduce; it also learns whether the forward pass leaves trainable weights unused (a
        text encoder's pooler). The net is then wrapped in DDP, searching for unused weights at
        every step only if there are any."""
        from torch.nn.parallel import DistributedDataParallel

        trainable = [p for p in self.net.parameters() if p.requires_grad]
        unused = any(distributed.gather(any(p.grad is None for p in trainable)))
        for p in trainable:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        distributed.average_gradients(trainable)
        self.model = DistributedDataParallel(self.net, device_ids=[self.device] if self.device.type == "cuda" else None,
                                             find_unused_parameters=unused)

    def _no_sync(self, sync: bool):
        """Skip DDP's gradient averaging on micro-batches before the last one of a step."""
        return self.model.no_sync() if not sync and self.model is not self.net else nullcontext()

    # -- one batch -----------------------------------------------------------------------
    def forward_step(self, inputs, labels: torch.Tensor, progress: float) -> tuple[torch.Tensor, TrainingStep]:
        """The task loss plus every term the callbacks add in ``on_loss``."""
        with self._autocast():
            features, logits = self.model(inputs, with_features=True)
            loss = self.loss_fn(logits.float(), labels)
            step = TrainingStep(features, logits, labels, progress)
            for callback in self.callbacks:
                callback.on_loss(self, step)
            for value in step.losses.values():
                loss = loss + value
        return loss, step

    def step(self) -> None:
        """After the backward passes of a step: ``after_backward`` (on unscaled, unclipped, averaged
        gradients), clip, optimizer step, schedule."""
        self.scaler.unscale_(self.optimizer)  # a no-op without fp16 loss scaling
        if self.world.size > 1:
            if self.model is self.net:
                self._average_probe()
            held = {id(p) for p in self.net.parameters()}  # weights outside the net (a domain classifier)
            distributed.average_gradients([p for g in self.optimizer.param_groups for p in g["params"]
                                           if id(p) not in held])
        for callback in self.callbacks:
            callback.after_backward(self)
        if self.settings.clip_norm:
            nn.utils.clip_grad_norm_(self.net.parameters(), self.settings.clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()

    # -- epochs --------------------------------------------------------------------------
    def steps_per_epoch(self, loader: Iterable) -> int:
        """Optimizer steps in an epoch: micro-batches left over after the last full step are not used."""
        return max(1, len(loader) // self.settings.accumulate)

    def new_tally(self) -> _EpochTally:
        """What sums up an epoch's training batches into its history row (loss, accuracy, F1, terms)."""
        return _EpochTally()

    def train_epoch(self, loader: Iterable) -> dict:
        self.set_train_mode()
        accumulate, steps = self.settings.accumulate, self.steps_per_epoch(loader)
        used = min(len(loader), steps * accumulate)
        seen = self.new_tally()
        for micro, (inputs, labels) in enumerate(loader):
            if micro >= used:
                break
            step, last = micro // accumulate + 1, (micro + 1) % accumulate == 0 or micro + 1 == used
            inputs, labels = self.to_device(inputs), labels.to(self.device)
            progress = (self.epoch * steps + step - 1) / (self.settings.epochs * steps)
            if micro % accumulate == 0:
                self.optimizer.zero_grad(set_to_none=True)
            with self._no_sync(last):
                loss, batch = self.forward_step(inputs, labels, progress)
                if not torch.isfinite(loss):
                    raise TrainingDiverged(
                        f"The training loss became {loss.item()} at epoch {self.epoch + 1}, step {step}. The last "
                        "good checkpoint is kept; lower `--lr` or raise `--warmup-epochs` and `--resume` the run.")
                self.scaler.scale(loss / accumulate).backward()
            seen.add(loss, batch)
            if last:
                self.step()
                for callback in self.callbacks:
                    callback.on_batch_end(self, step, steps)
        return seen.metrics(self.classes)

    @torch.inference_mode()
    def predict_logits(self, loader: Iterable) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and labels of this rank's samples of ``loader``."""
        self.net.eval()
        logits, labels = [], []
        for inputs, target in loader:
            with self._autocast():
                logits.append(self.net(self.to_device(inputs)).float().cpu())
            labels.append(target)
        if not logits:  # a rank whose shard is empty
            return torch.empty(0, len(self.classes)), torch.empty(0, dtype=torch.long)
        return torch.cat(logits), torch.cat(labels)

    def validate(self, loader: Iterable) -> dict:
        """Validation metrics over every rank's samples (each rank holds a shard of the split)."""
        parts = distributed.gather(self.predict_logits(loader))
        logits, labels = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        metrics = classification_metrics(labels.numpy(), logits.argmax(1).numpy(), self.classes)
        return {"val_loss": float(nn.functional.cross_entropy(logits, labels)),
                **{f"val_{k}": metrics[k] for k in ("accuracy", "precision", "recall", "f1")}}

    def prepare(self, steps_per_epoch: int) -> None:
        """Create the warm-up + cosine schedule (before a checkpoint is restored into it)."""
        total = self.settings.epochs * steps_per_epoch
        warmup = int(self.settings.warmup_epochs * steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(total, warmup))

    def fit(self, train_loader: Iterable, val_loader: Iterable) -> list[dict]:
        """Train for the configured epochs (continuing from ``self.epoch`` after a resume).

        The fit draws from private copies of the global generators (see :func:`private_rng`):
        the caller's random state is the same afterwards, whatever the callbacks seed.
        """
        if self.scheduler is None:
            self.prepare(self.steps_per_epoch(train_loader))
        if self.device.type == "cpu":
            keep_freed_memory()  # each step's buffers come from the heap, not new pages (allocator.py)
        with private_rng(self.device):
            for callback in self.callbacks:
                callback.on_fit_start(self)
            while self.epoch < self.settings.epochs and not self.should_stop:
                self._run_epoch(train_loader, val_loader)
            for callback in self.callbacks:
                callback.on_fit_end(self)
        return self.history

    def _run_epoch(self, train_loader: Iterable, val_loader: Iterable) -> None:
        for callback in self.callbacks:
            callback.on_epoch_start(self, self.epoch)
        self.wrap()
        started = time.perf_counter()
        row = {"epoch": self.epoch + 1, **self.train_epoch(train_loader), **self.validate(val_loader),
               "lr": max(g["lr"] for g in self.optimizer.param_groups)}
        row["seconds"] = round(time.perf_counter() - started, 3)
        self.history.append(row)
        self.epoch += 1
        for callback in self.callbacks:
            callback.on_epoch_end(self, self.epoch, row)


class _EpochTally:
    """An epoch's training loss, extra loss terms and predictions, summed over micro-batches and ranks."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {"train_loss": 0.0}
        self.predicted: list[torch.Tensor] = []
        self.truth: list[torch.Tensor] = []

    def add(self, loss: torch.Tensor, batch: TrainingStep) -> None:
        count = len(batch.labels)
        self.totals["train_loss"] += loss.item() * count
        for name, value in batch.losses.items():
            key = f"train_{name}_loss"
            self.totals[key] = self.totals.get(key, 0.0) + float(value.detach()) * count
        self.predicted.append(batch.logits.detach().argmax(1).cpu())
        self.truth.append(batch.labels.cpu())

    def metrics(self, classes: list[str]) -> dict:
        mine = (self.totals, torch.cat(self.truth) if self.truth else torch.empty(0, dtype=torch.long),
                torch.cat(self.predicted) if self.predicted else torch.empty(0, dtype=torch.long))
        parts = distributed.gather(mine)
        truth, predicted = torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts])
        if not len(truth):
            return {"train_loss": 0.0, "train_accuracy": 0.0, "train_f1": 0.0}
        totals: dict[str, float] = {}
        for part in parts:
            for key, value in part[0].items():
                totals[key] = totals.get(key, 0.0) + value
        seen = classification_metrics(truth.numpy(), predicted.numpy(), classes)
        terms = {k: v / seen["samples"] for k, v in totals.items() if k != "train_loss"}
        return {"train_loss": totals["train_loss"] / seen["samples"], "train_accuracy": seen["accuracy"],
                "train_f1": seen["f1"], **terms}
