"""Fine-tuning strategies: ``finetune``, ``lp-ft`` and the ``scratch`` baseline.

All three train a :class:`TransferNet` (backbone + dropout + new head) with the one loop in
``training/``; they differ in where the weights start and what trains.
"""

from __future__ import annotations

import time

from torch import nn

from ..training import group_of_parameters, trainable_groups
from .base import FitJob, register_strategy
from .configs import FinetuneConfig, LinearProbeConfig
from .linear_probe import fit_probe_head
from .network import NetworkPlan, NetworkStrategy

__all__ = ["FinetuneConfig", "Finetune", "LpFt", "Scratch"]


@register_strategy
class Finetune(NetworkStrategy):
    """Backbone and a new head train; the top layer groups at ``lr``, lower ones decayed."""

    name = "finetune"
    config_class = FinetuneConfig
    unused = frozenset({"lpft_lr_scale"})

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
    unused = frozenset()

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
    unused = frozenset({"lpft_lr_scale", "l2sp", "train_bn"})  # its plan overrides them

    def plan(self, job: FitJob) -> NetworkPlan:
        plan = super().plan(job)
        # every weight is new: all train at the new head's rate, and random statistics must be learned
        plan.lr, plan.head_lr_scale, plan.l2sp, plan.train_bn = plan.lr * plan.head_lr_scale, 1.0, 0.0, True
        return plan
