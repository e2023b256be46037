"""Fine-tuning strategies: ``finetune``, ``lp-ft`` and the ``scratch`` baseline.

All three train a :class:`TransferNet` (backbone + dropout + new head) with the one loop in
``training/``; they differ in where the weights start and what trains.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.utils.class_weight import compute_class_weight
from torch import nn

from ..backbones import Backbone
from ..data import LabelledData, labelled_loader
from ..errors import ConfigError
from ..training import (AuxiliaryLoss, Callback, Checkpointing, EarlyStopping, EpochSeeding, GradualUnfreezing, LoopSettings,
                        Trainer, TransferNet, group_of_parameters, load_checkpoint, optimizer_groups, set_trainable,
                        trainable_groups)

__all__ = ["FinetuneConfig", "train_network", "NETWORK_STRATEGIES"]

NETWORK_STRATEGIES = ("finetune", "lp-ft", "scratch")


def _help(text: str) -> dict:
    return {"help": text}


@dataclass
class FinetuneConfig:
    """Options of ``finetune``, ``lp-ft`` and ``scratch`` (one config: same budget, fair comparison)."""

    epochs: int = field(default=5, metadata=_help("passes over the training data"))
    lr: float = field(default=3e-4, metadata=_help("peak learning rate of the backbone's top layer group (AdamW)"))
    head_lr_scale: float = field(default=10.0, metadata=_help("the new head's lr relative to lr: it starts from nothing"))
    weight_decay: float = field(default=0.01, metadata=_help("AdamW weight decay (none on biases and norms)"))
    batch_size: int = field(default=32, metadata=_help("training batch size"))
    unfreeze: str = field(default="all", metadata=_help("'all', or how many top layer groups train"))
    gradual: int = field(default=0, metadata=_help("unfreeze one more group every N epochs (0: off)"))
    layer_decay: float = field(default=1.0, metadata=_help("each group's lr is the group above's times this"))
    dropout: float = field(default=0.1, metadata=_help("dropout before the head"))
    label_smoothing: float = field(default=0.1, metadata=_help("label smoothing of the cross-entropy"))
    l2sp: float = field(default=0.0, metadata=_help("L2-SP strength: pull towards the pre-trained weights"))
    patience: int = field(default=3, metadata=_help("early-stopping patience in epochs (0: off)"))
    warmup_epochs: float = field(default=0.5, metadata=_help("linear warm-up before the cosine decay"))
    clip_norm: float = field(default=1.0, metadata=_help("gradient-norm clipping (0: off)"))
    train_bn: bool = field(default=False, metadata=_help(
        "update BatchNorm statistics while fine-tuning; off keeps the pre-trained ones (better on small data)"))
    min_crop: float = field(default=0.25, metadata=_help("smallest share of an image a random training crop keeps"))
    randaugment: str | None = field(default=None, metadata=_help("timm RandAugment policy, e.g. rand-m9-mstd0.5"))
    lpft_lr_scale: float = field(default=0.1, metadata=_help("lp-ft: fine-tuning lr relative to lr"))
    class_weight: str | None = field(default=None, metadata=_help("'balanced' for imbalanced classes"))

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> ConfigError:
            return ConfigError(f"The '{name}' option of finetune must be {rule}. Got {getattr(self, name)!r} instead.")

        if self.epochs < 1:
            raise bad("epochs", "an int >= 1")
        for name in ("lr", "lpft_lr_scale", "head_lr_scale"):
            if not getattr(self, name) > 0:
                raise bad(name, "a float > 0")
        for name in ("weight_decay", "l2sp", "warmup_epochs", "clip_norm"):
            if getattr(self, name) < 0:
                raise bad(name, "a float >= 0")
        if not 0 < self.min_crop <= 1:
            raise bad("min_crop", "in (0, 1]")
        if not 0 < self.layer_decay <= 1:
            raise bad("layer_decay", "in (0, 1]")
        for name in ("dropout", "label_smoothing"):
            if not 0 <= getattr(self, name) < 1:
                raise bad(name, "in [0, 1)")
        if self.batch_size < 1:
            raise bad("batch_size", "an int >= 1")
        if self.unfreeze != "all" and not str(self.unfreeze).isdigit():
            raise bad("unfreeze", "'all' or an int >= 0")
        if self.gradual < 0 or self.patience < 0:
            raise bad("gradual" if self.gradual < 0 else "patience", "an int >= 0")
        if self.class_weight not in (None, "balanced"):
            raise bad("class_weight", "'balanced' or None")
        if self.randaugment is not None and not _is_randaugment_policy(self.randaugment):
            raise bad("randaugment", "a timm RandAugment policy such as 'rand-m9-mstd0.5'")


def _is_randaugment_policy(policy: str) -> bool:
    """Whether timm parses ``policy`` as RandAugment (it asserts deep inside the data pipeline otherwise)."""
    from timm.data.auto_augment import rand_augment_transform

    if not policy.startswith("rand"):
        return False
    try:
        rand_augment_transform(policy, {})
    except (AssertionError, ValueError):
        return False
    return True


def _class_weights(y: np.ndarray, n_classes: int, mode: str | None) -> list[float] | None:
    if mode != "balanced":
        return None
    weights = np.ones(n_classes)
    present = np.unique(y)
    weights[present] = compute_class_weight("balanced", classes=present, y=y)
    return weights.tolist()


def train_network(strategy: str, config: FinetuneConfig, backbone: Backbone, head: nn.Module,
                  train: LabelledData, val: LabelledData, classes: list[str], *, device: torch.device,
                  seed: int, num_workers: int, checkpoint: Path | None = None, resume: bool = False,
                  callbacks: list[Callback] = (), prepare: Callable[[nn.Module], nn.Module] | None = None,
                  auxiliary: AuxiliaryLoss | None = None) -> tuple[TransferNet, list[dict]]:
    """Train backbone + head; return the network (best epoch restored) and its history.

    ``prepare`` (lora, bitfit) freezes or wraps the backbone before the optimizer is built;
    it decides what trains, so layer groups then only serve as one group at ``lr``.
    ``auxiliary`` adds a loss on each batch's features (domain adaptation); its parameters
    train at the head's rate.
    """
    contract = backbone.contract
    module = prepare(backbone.module) if prepare else backbone.module
    groups = contract.layer_groups if prepare is None else ()
    group_index = group_of_parameters(module, groups)
    n_groups = max(len(groups), 1)
    start = trainable_groups(n_groups, config.unfreeze)
    lr = config.lr * (config.lpft_lr_scale if strategy == "lp-ft" else 1.0)
    head_scale = config.head_lr_scale
    if strategy == "scratch":  # every weight is new: all train at the new head's rate
        lr, head_scale = lr * head_scale, 1.0
    net = TransferNet(module, head, config.dropout)
    if config.gradual:
        start = min(start, 1)
    if prepare is None:
        set_trainable(net.backbone, group_index, n_groups, start)
    param_groups = optimizer_groups(net.backbone, net.head, group_index, n_groups, lr, config.layer_decay,
                                    config.weight_decay, head_scale)
    if auxiliary is not None and auxiliary.parameters():
        param_groups.append({"params": auxiliary.parameters(), "lr": lr * head_scale, "lr_scale": head_scale,
                             "weight_decay": config.weight_decay, "name": "auxiliary"})
    optimizer = torch.optim.AdamW(param_groups)
    settings = LoopSettings(
        epochs=config.epochs, warmup_epochs=config.warmup_epochs, clip_norm=config.clip_norm or None,
        label_smoothing=config.label_smoothing, l2sp=config.l2sp if strategy != "scratch" else 0.0,
        device=str(device), channels_last=contract.channels_last,
        train_bn=config.train_bn or strategy == "scratch",  # random statistics must be learned
        class_weights=_class_weights(train.y, len(classes), config.class_weight))
    every: list[Callback] = [EpochSeeding(seed)]
    if config.gradual:
        ceiling = trainable_groups(n_groups, config.unfreeze)
        every.append(GradualUnfreezing(group_index, n_groups, start, config.gradual, ceiling))
    every.append(EarlyStopping("val_f1", config.patience or None))
    if auxiliary is not None:
        every.append(auxiliary)
    if checkpoint is not None:
        every.append(Checkpointing(checkpoint))
    trainer = Trainer(net, optimizer, settings, classes, callbacks=every + list(callbacks), auxiliary=auxiliary)
    workers = num_workers if contract.modality == "image" else 0
    train_loader = labelled_loader(train, contract, tokenizer=backbone.tokenizer, train=True,
                                   batch_size=config.batch_size, num_workers=workers, randaugment=config.randaugment,
                                   min_crop=config.min_crop)
    val_loader = labelled_loader(val, contract, tokenizer=backbone.tokenizer, train=False,
                                 batch_size=config.batch_size * 2, num_workers=workers)
    trainer.prepare(len(train_loader))
    if resume and checkpoint is not None and checkpoint.is_file():
        load_checkpoint(trainer, checkpoint)
    trainer.fit(train_loader, val_loader)
    net.eval()
    return net, trainer.history
