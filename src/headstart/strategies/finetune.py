"""Fine-tuning strategies: ``finetune``, ``lp-ft`` and the ``scratch`` baseline.

All three train a :class:`TransferNet` (backbone + dropout + new head) with the one loop in
``training/``; they differ in where the weights start and what trains.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from ..config import at_least, between, option, satisfies
from ..training import group_of_parameters, trainable_groups
from .base import FitJob, register_strategy
from .linear_probe import LinearProbeConfig, fit_probe_head
from .network import NetworkPlan, NetworkStrategy, TrainingConfig

__all__ = ["FinetuneConfig", "Finetune", "LpFt", "Scratch"]


@dataclass
class FinetuneConfig(TrainingConfig):
    """Options of ``finetune``, ``lp-ft`` and ``scratch`` (one config: same budget, fair comparison)."""

    owner: ClassVar[str] = "finetune"
    unfreeze: str = option("all", "'all', or how many top layer groups train",
                           satisfies("'all' or an int >= 0", lambda v: v == "all" or str(v).isdigit()))
    gradual: int = option(0, "unfreeze one more group every N epochs (0: off)", at_least(0, int))
    layer_decay: float = option(1.0, "each group's lr is the group above's times this", between(0, 1, low_open=True))
    l2sp: float = option(0.0, "L2-SP strength: pull the backbone towards its pre-trained weights", at_least(0))
    train_bn: bool = option(False, "update BatchNorm statistics while fine-tuning; off keeps the pre-trained ones "
                                   "(better on small data)")
    lpft_lr_scale: float = option(0.1, "lp-ft: fine-tuning lr relative to lr", at_least(0, strict=True))

    def __post_init__(self) -> None:
        self.unfreeze = str(self.unfreeze)
        super().__post_init__()


@register_strategy
class Finetune(NetworkStrategy):
    """Backbone and a new head train; the top layer groups at ``lr``, lower ones decayed."""

    name = "finetune"
    config_class = FinetuneConfig

    def plan(self, job: FitJob) -> NetworkPlan:
        c = self.config
        self.layer_groups_ = job.backbone.contract.layer_groups
        return NetworkPlan(self.start_head(job), lr=c.lr, head_lr_scale=c.head_lr_scale, l2sp=c.l2sp,
                           train_bn=c.train_bn, unfreeze=c.unfreeze, gradual=c.gradual, layer_decay=c.layer_decay)

    def start_head(self, job: FitJob) -> nn.Module:
        return self.new_head(job)

    def trainable_parameters(self) -> int:
        if self.config.unfreeze == "all":
            return sum(p.numel() for p in self.net_.parameters())
        groups = self.layer_groups_
        index = group_of_parameters(self.net_.backbone, groups)
        first = len(groups) - trainable_groups(len(groups), self.config.unfreeze)
        backbone = sum(p.numel() for n, p in self.net_.backbone.named_parameters() if index[n] >= first)
        return backbone + sum(p.numel() for p in self.net_.head.parameters())

    def restore(self, backbone, n_classes, tensors, run_config) -> None:
        super().restore(backbone, n_classes, tensors, run_config)
        self.layer_groups_ = backbone.contract.layer_groups


@register_strategy
class LpFt(Finetune):
    """Linear probe first, then the whole network from that head at a smaller rate
    (Kumar et al., ICLR 2022)."""

    name = "lp-ft"
    reads_features = True  # the probe's head

    def plan(self, job: FitJob) -> NetworkPlan:
        plan = super().plan(job)
        plan.lr = self.config.lr * self.config.lpft_lr_scale
        return plan

    def start_head(self, job: FitJob) -> nn.Module:
        """The probe's head, fit on train alone: fine-tuning early-stops on val, so it must not have seen val."""
        started = time.perf_counter()
        fitted = fit_probe_head(LinearProbeConfig(class_weight=self.config.class_weight), job, refit_on_all=False)
        job.info["probe_seconds"] = round(time.perf_counter() - started, 3)
        return fitted.head


@register_strategy
class Scratch(Finetune):
    """The same architecture from random weights: the baseline transfer is measured against."""

    name = "scratch"
    pretrained = False
    unsearched = frozenset({"unfreeze", "layer_decay"})  # random weights: nothing to keep frozen or decay towards

    def plan(self, job: FitJob) -> NetworkPlan:
        plan = super().plan(job)
        # every weight is new: all train at the new head's rate, and random statistics must be learned
        plan.lr, plan.head_lr_scale, plan.l2sp, plan.train_bn = plan.lr * plan.head_lr_scale, 1.0, 0.0, True
        return plan
