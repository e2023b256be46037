"""Linear probe: a frozen backbone's cached features, and a new head fit on them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..backbones import Backbone
from ..data import LabelledData
from ..heads import HeadFit, build_head, fit_linear_probe, fit_mlp_head
from ..training import TransferNet
from .base import ComputeContext, FitJob, Strategy, register_strategy
from .configs import LinearProbeConfig

__all__ = ["LinearProbeConfig", "LinearProbe", "fit_linear_probe_strategy"]


def fit_linear_probe_strategy(config: LinearProbeConfig, x_train: np.ndarray, y_train: np.ndarray,
                              x_val: np.ndarray, y_val: np.ndarray, n_classes: int, seed: int,
                              refit_on_all: bool = True) -> HeadFit:
    """Fit the head the config asks for on frozen features.

    ``refit_on_all=False`` keeps the linear head fitted on ``x_train`` alone, so a search can
    score it on ``x_val`` honestly.
    """
    if config.head == "linear":
        grid = {"c_grid": (float(config.C),)} if config.C is not None else {}
        return fit_linear_probe(x_train, y_train, x_val, y_val, n_classes, class_weight=config.class_weight,
                                refit_on_all=refit_on_all, **grid)
    return fit_mlp_head(x_train, y_train, x_val, y_val, n_classes, class_weight=config.class_weight,
                        hidden=config.hidden, dropout=config.dropout, seed=seed)


def fit_probe_head(config: LinearProbeConfig, job: FitJob, refit_on_all: bool) -> HeadFit:
    """Fit a head on the frozen backbone's features of the job's train split (chosen on val);
    an adaptation method may change those features (coral, adabn)."""
    x_train, x_val = (job.adaptation.head_features(job) if job.adaptation else
                      (job.features(job.train, "train features"), job.features(job.val, "validation features")))
    fitted = fit_linear_probe_strategy(config, x_train, job.train.y, x_val, job.val.y, len(job.classes), job.seed,
                                       refit_on_all=refit_on_all)
    job.info.update(selected=fitted.params, val_accuracy=fitted.val_accuracy)
    return fitted


@register_strategy
class LinearProbe(Strategy):
    """A new head on frozen, cached features; the backbone never changes."""

    name = "linear-probe"
    config_class = LinearProbeConfig

    @classmethod
    def option_applies(cls, name: str, config: dict, modality: str | None = None) -> bool:
        head_only = {"C": "linear", "hidden": "mlp", "dropout": "mlp"}  # the options of one head
        return head_only.get(name, config.get("head", "linear")) == config.get("head", "linear")

    @classmethod
    def worth_searching(cls, name: str, fixed: dict) -> bool:
        return name != ("dropout" if fixed.get("head", "linear") == "linear" else "C")

    def fit(self, job: FitJob) -> None:
        fitted = fit_probe_head(self.config, job, refit_on_all=True)
        self.net_ = TransferNet(job.backbone.module, fitted.head.eval())
        self.backbone_changed_ = False

    def replace_backbone(self, module) -> None:
        super().replace_backbone(module)
        self.backbone_changed_ = True  # cached features no longer describe this backbone

    def predict_proba(self, data: LabelledData, context: ComputeContext) -> np.ndarray:
        if self.backbone_changed_:
            return super().predict_proba(data, context)
        features = torch.as_tensor(context.features(data, "features"))
        with torch.inference_mode():
            return torch.softmax(self.net_.head.eval()(features), dim=1).numpy()

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.net_.head.parameters())

    def state_tensors(self) -> dict[str, torch.Tensor]:
        if self.backbone_changed_:  # e.g. AdaBN statistics: the run holds the whole network
            return super().state_tensors()
        return {f"head.{k}": v for k, v in self.net_.head.state_dict().items()}

    @classmethod
    def needs_pretrained_base(cls, run_config: dict, tensor_names: Sequence[str]) -> bool:
        return not any(name.startswith("backbone.") for name in tensor_names)

    def restore(self, backbone: Backbone, n_classes: int, tensors: dict[str, torch.Tensor], run_config: dict) -> None:
        config, dim = self.config, backbone.contract.feature_dim
        options = {"hidden": config.hidden, "dropout": config.dropout} if config.head == "mlp" else {}
        self.net_ = TransferNet(backbone.module, build_head(config.head, dim, n_classes, **options))
        self.backbone_changed_ = not self.needs_pretrained_base(run_config, list(tensors))
        if self.backbone_changed_:
            self.net_.load_state_dict(tensors, strict=True)
        else:
            self.net_.head.load_state_dict({k.removeprefix("head."): v for k, v in tensors.items()}, strict=True)
        self.as_trained(backbone)

    def as_trained(self, backbone: Backbone) -> None:
        self.net_.eval()
        if self.backbone_changed_ and backbone.contract.channels_last:  # as AdaBN left it
            self.net_.to(memory_format=torch.channels_last)
