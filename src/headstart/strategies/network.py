"""What every network strategy shares: the training options, and training backbone + head
through the one loop in ``training/``.

A network strategy (finetune, lp-ft, scratch, lora, bitfit) decides a :class:`NetworkPlan`
(where the head starts, learning rates, what trains); :func:`train_network` carries it out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import torch
from torch import nn

from .. import distributed
from ..config import Config, at_least, between, one_of, option, satisfies
from ..heads import balanced_class_weights
from ..data import labelled_loader
from ..training import (L2SP, Callback, Checkpointing, EarlyStopping, EpochSeeding, GradualUnfreezing, LoopSettings, Trainer,
                        TransferNet, group_of_parameters, load_checkpoint, optimizer_groups, set_trainable,
                        trainable_groups)
from .base import FitJob, Strategy

__all__ = ["TrainingConfig", "NetworkPlan", "NetworkStrategy", "train_network"]


def _is_randaugment_policy(policy: str) -> bool:
    """Whether timm parses ``policy`` as RandAugment (it asserts deep inside the data pipeline otherwise)."""
    from timm.data.auto_augment import rand_augment_transform

    if not isinstance(policy, str) or not policy.startswith("rand"):
        return False
    try:
        rand_augment_transform(policy, {})
    except (AssertionError, ValueError):
        return False
    return True


@dataclass
class TrainingConfig(Config):
    """Options every network strategy shares: the budget, the schedule, the regularisation."""

    epochs: int = option(5, "passes over the training data", at_least(1, int))
    lr: float = option(3e-4, "peak learning rate of the backbone's top layer group (AdamW)", at_least(0, strict=True))
    head_lr_scale: float = option(10.0, "the new head's lr relative to lr: it starts from nothing",
                                  at_least(0, strict=True))
    weight_decay: float = option(0.01, "AdamW weight decay (none on biases and norms)", at_least(0))
    batch_size: int = option(32, "training batch size, over all processes (--batch-size is the feature-extraction "
                             "batch)", at_least(1, int), flag="train-batch")
    accumulate: int = option(1, "gradient accumulation: each --train-batch runs as K micro-batches, one after another "
                             "(same result, about 1/K of the activation memory)", at_least(1, int))
    warmup_epochs: float = option(0.5, "epochs of linear warm-up before the cosine decay", at_least(0))
    patience: int = option(3, "early-stopping patience in epochs on validation macro F1 (0: off)", at_least(0, int))
    clip_norm: float = option(1.0, "gradient-norm clipping (0: off)", at_least(0))
    dropout: float = option(0.1, "dropout before the head", between(0, 1, high_open=True))
    label_smoothing: float = option(0.1, "label smoothing of the cross-entropy", between(0, 1, high_open=True))
    min_crop: float = option(0.25, "smallest share of an image a random training crop keeps",
                             between(0, 1, low_open=True))
    randaugment: str | None = option(None, "timm RandAugment policy for images, e.g. rand-m9-mstd0.5",
                                     satisfies("a timm RandAugment policy such as 'rand-m9-mstd0.5'",
                                               _is_randaugment_policy))
    class_weight: str | None = option(None, "'balanced' weighs classes inversely to their frequency (for imbalanced data)",
                                      one_of(None, "balanced"))


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
