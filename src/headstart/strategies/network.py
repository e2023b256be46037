"""What every network strategy shares: the training options, and training backbone + head
through the one loop in ``training/``.

A network strategy (finetune, lp-ft, scratch, lora, bitfit) decides a :class:`NetworkPlan`
(where the head starts, learning rates, what trains); :func:`train_network` carries it out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import ClassVar

import torch
from torch import nn

from .. import distributed
from ..heads import balanced_class_weights
from ..data import labelled_loader
from ..training import (L2SP, Callback, Checkpointing, EarlyStopping, EpochSeeding, GradualUnfreezing, LoopSettings, Trainer,
                        TransferNet, group_of_parameters, load_checkpoint, optimizer_groups, set_trainable,
                        trainable_groups)
from .base import FitJob, Strategy
from .configs import TrainingConfig

__all__ = ["TrainingConfig", "NetworkPlan", "NetworkStrategy", "train_network"]


@dataclass
class NetworkPlan:
    """What a network strategy decided; :func:`train_network` carries it out.

    ``prepare`` (lora, bitfit) freezes or wraps the backbone before the optimizer is built;
    it then decides what trains, and layer groups serve only as one group at ``lr``.
    """

    head: nn.Module
    lr: float
    head_lr_scale: float
    l2sp: float = 0.0
    train_bn: bool = False
    unfreeze: str = "all"
    gradual: int = 0
    layer_decay: float = 1.0
    prepare: Callable[[nn.Module], nn.Module] | None = None


def _optimizer(plan: NetworkPlan, config: TrainingConfig, net: TransferNet, group_index: dict, n_groups: int,
               extra: list[nn.Parameter]) -> torch.optim.Optimizer:
    param_groups = optimizer_groups(net.backbone, net.head, group_index, n_groups, plan.lr, plan.layer_decay,
                                    config.weight_decay, plan.head_lr_scale)
    if extra:  # e.g. a domain classifier: new weights, trained at the head's rate
        param_groups.append({"params": extra, "lr": plan.lr * plan.head_lr_scale, "lr_scale": plan.head_lr_scale,
                             "weight_decay": config.weight_decay, "name": "auxiliary"})
    return torch.optim.AdamW(param_groups)


def _loaders(config: TrainingConfig, job: FitJob):
    """Training micro-batches of this rank's share of each global batch, and its shard of validation."""
    contract, tokenizer = job.backbone.contract, job.backbone.tokenizer
    workers = job.num_workers if contract.modality == "image" else 0
    world = distributed.current()
    micro = distributed.micro_batch(config.batch_size, config.accumulate, world.size)
    train = labelled_loader(job.train, contract, tokenizer=tokenizer, train=True, batch_size=micro,
                            num_workers=workers, randaugment=config.randaugment, min_crop=config.min_crop,
                            generator=torch.Generator(), world=world, seed=job.seed)  # seeded per epoch by EpochSeeding
    val = labelled_loader(job.val, contract, tokenizer=tokenizer, train=False, batch_size=micro * 2,
                          num_workers=workers, world=world)
    return train, val


def train_network(plan: NetworkPlan, config: TrainingConfig, job: FitJob) -> tuple[TransferNet, list[dict]]:
    """Train backbone + head as planned; return the network (best epoch restored) and its history."""
    contract = job.backbone.contract
    with torch.random.fork_rng(devices=[]):  # new weights (e.g. LoRA's A matrices) start from the run's seed
        torch.manual_seed(job.seed)
        module = plan.prepare(job.backbone.module) if plan.prepare else job.backbone.module
    groups = contract.layer_groups if plan.prepare is None else ()
    group_index = group_of_parameters(module, groups)
    n_groups = max(len(groups), 1)
    ceiling = trainable_groups(n_groups, plan.unfreeze)
    start = min(ceiling, 1) if plan.gradual else ceiling
    net = TransferNet(module, plan.head, config.dropout)
    if plan.prepare is None:
        set_trainable(net.backbone, group_index, n_groups, start)

    settings = LoopSettings(
        epochs=config.epochs, warmup_epochs=config.warmup_epochs, clip_norm=config.clip_norm or None,
        label_smoothing=config.label_smoothing, device=str(job.device),
        channels_last=contract.channels_last, train_bn=plan.train_bn, accumulate=config.accumulate,
        class_weights=balanced_class_weights(job.train.y, len(job.classes)) if config.class_weight else None)
    train_loader, val_loader = _loaders(config, job)
    every: list[Callback] = [EpochSeeding(job.seed, [train_loader.generator], [train_loader])]
    if plan.gradual:
        every.append(GradualUnfreezing(group_index, n_groups, start, plan.gradual, ceiling))
    every.append(EarlyStopping("val_f1", config.patience or None))
    every.extend(job.adaptation.training_callbacks(job, config) if job.adaptation else [])
    if job.checkpoint is not None:
        every.append(Checkpointing(job.checkpoint))
    every.extend(job.callbacks)
    if plan.l2sp > 0:  # last: a checkpoint of an older version lists the others' states by position
        every.append(L2SP(plan.l2sp, net.backbone))
    extra = [p for callback in every for p in callback.parameters()]  # e.g. a domain classifier
    optimizer = _optimizer(plan, config, net, group_index, n_groups, extra)
    trainer = Trainer(net, optimizer, settings, job.classes, callbacks=every)
    trainer.prepare(trainer.steps_per_epoch(train_loader))
    if job.resume and job.checkpoint is not None and distributed.broadcast(job.checkpoint.is_file()):
        load_checkpoint(trainer, job.checkpoint)
    trainer.fit(train_loader, val_loader)
    net.eval()
    return net, trainer.history


class NetworkStrategy(Strategy):
    """A strategy that trains backbone and head with the loop; subclasses decide the plan."""

    trains_backbone = True
    reads_features = False
    config_class = TrainingConfig
    image_only: ClassVar[frozenset[str]] = frozenset({"min_crop", "randaugment"})  # augmentation of images

    @classmethod
    def option_applies(cls, name: str, config: dict, modality: str | None = None) -> bool:
        return super().option_applies(name, config, modality) and not (modality == "text" and name in cls.image_only)

    def plan(self, job: FitJob) -> NetworkPlan:
        raise NotImplementedError

    @classmethod
    def config_for_budget(cls, budget: TrainingConfig | None) -> TrainingConfig:
        """The budget itself when it is this strategy's config; else this config with the
        budget's shared training options (epochs, batch size, schedule...) and its own lr."""
        if budget is None or type(budget) is cls.config_class:
            return budget or cls.config_class()
        shared = {f.name: getattr(budget, f.name) for f in fields(TrainingConfig) if f.name != "lr"}
        return cls.config_class(**shared)

    def refit_config(self, info: dict) -> TrainingConfig:
        """The best epoch count found on validation, without early stopping (there is no honest validation)."""
        return replace(self.config, epochs=info["best_epoch"], patience=0)

    def fit(self, job: FitJob) -> None:
        self.net_, history = train_network(self.plan(job), self.config, job)
        self.history_ = history
        best = max(history, key=lambda row: row["val_f1"])
        job.info.update(best_epoch=best["epoch"], epochs_run=len(history), val_accuracy=best["val_accuracy"])

    def new_head(self, job: FitJob) -> nn.Module:
        """A new linear head, initialised from the run's seed (the global generator is left alone)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(job.seed)
            return nn.Linear(job.backbone.contract.feature_dim, len(job.classes))
