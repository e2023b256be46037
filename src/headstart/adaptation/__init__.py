"""Domain adaptation: learn from labelled source data for an unlabelled target domain.

Each method is a small config dataclass in its own module (``coral``, ``adabn``, ``dann``,
``mmd``); ``Transfer(..., adapt=...)`` applies it, and ``domain_shift`` measures how far
apart two domains are before anything is trained.
"""

from __future__ import annotations

from dataclasses import asdict

from ..backbones import Backbone
from ..data import LabelledData, labelled_loader
from ..errors import ConfigError, DataError, did_you_mean
from ..training import AuxiliaryLoss
from .adabn import AdaBNConfig, batchnorm_layers, reestimate_batchnorm, require_batchnorm, with_batchnorm_statistics
from .coral import CoralAlignment, CoralConfig
from .dann import DannConfig, DomainAdversarialLoss, GradientReversal, reverse_gradient
from .mmd import MmdConfig, MmdLoss, multi_kernel_mmd
from .shift import DomainShift, domain_shift, measure_shift
from .target_batches import ganin_schedule

__all__ = [
    "AdaBNConfig", "adapt_config_dict", "ADAPT_METHODS", "batchnorm_layers", "check_target", "CoralAlignment",
    "CoralConfig", "DannConfig", "domain_shift", "DomainAdversarialLoss", "DomainShift", "ganin_schedule",
    "GradientReversal", "make_adapt_config", "measure_shift", "MmdConfig", "MmdLoss", "multi_kernel_mmd",
    "reestimate_batchnorm", "require_batchnorm", "reverse_gradient", "target_loss", "with_batchnorm_statistics",
]

ADAPT_METHODS = {"coral": CoralConfig, "adabn": AdaBNConfig, "dann": DannConfig, "mmd": MmdConfig}
AdaptConfig = CoralConfig | AdaBNConfig | DannConfig | MmdConfig
# which strategies each method composes with: coral changes cached features, so only a head on
# them; dann and mmd add a loss to fine-tuning; adabn re-estimates statistics after any fit.
# The first is the method's default.
STRATEGIES_OF = {"coral": ("linear-probe",), "adabn": ("linear-probe", "finetune", "lp-ft"),
                 "dann": ("finetune", "lp-ft"), "mmd": ("finetune", "lp-ft")}


def make_adapt_config(adapt: str | dict | AdaptConfig | None) -> AdaptConfig | None:
    """The method's typed config from its name, a dict ``{"method": name, **options}``, or a config."""
    if adapt is None or isinstance(adapt, tuple(ADAPT_METHODS.values())):
        return adapt
    if isinstance(adapt, str):
        adapt = {"method": adapt}
    if not isinstance(adapt, dict):
        raise ConfigError(f"`adapt` must be a method name ({', '.join(ADAPT_METHODS)}), a dict or a method config. "
                          f"Got {type(adapt).__name__}.")
    options = dict(adapt)
    method = options.pop("method", None)
    if method not in ADAPT_METHODS:
        raise ConfigError(f"Unknown adaptation method {method!r}.{did_you_mean(str(method), ADAPT_METHODS)} "
                          f"Choose one of: {', '.join(ADAPT_METHODS)}.")
    config_class = ADAPT_METHODS[method]
    foreign = sorted(set(options) - set(config_class.__dataclass_fields__))
    if foreign:
        raise ConfigError(f"{', '.join(foreign)} does not apply to the {method} method; its options are: "
                          f"{', '.join(config_class.__dataclass_fields__) or 'none'}.")
    return config_class(**options)


def adapt_config_dict(config: AdaptConfig) -> dict:
    """What ``config.yaml`` records: the method and its options."""
    return {"method": config.method, **asdict(config)}


def check_target(config: AdaptConfig | None, strategy: str, train: LabelledData, target: LabelledData | None) -> None:
    """Reject, before any model work, a target without a method, a method without a target,
    a strategy the method cannot compose with, and a target of the other modality."""
    if config is None:
        if target is not None:
            raise ConfigError("`target` data is only used for domain adaptation; give `adapt=` one of "
                              f"{', '.join(ADAPT_METHODS)}, or leave `target` out.")
        return
    if strategy not in STRATEGIES_OF[config.method]:
        raise ConfigError(f"adaptation method {config.method} does not work with strategy '{strategy}'; use strategy "
                          + " or ".join(f"'{s}'" for s in STRATEGIES_OF[config.method]) + ".")
    if target is None:
        raise ConfigError(f"adaptation method {config.method} needs unlabelled target data: call `fit(train, target=...)`.")
    if target.modality != train.modality:
        raise DataError(f"The target {target.source} holds {target.modality} data but the source {train.source} "
                        f"holds {train.modality}; both domains must be of one modality.")
    if len(target) < 2:
        raise DataError(f"The target {target.source} has {len(target)} sample; adaptation needs at least 2.")


def target_loss(config: DannConfig | MmdConfig, backbone: Backbone, target: LabelledData, *, batch_size: int,
                num_workers: int, min_crop: float, randaugment: str | None = None) -> AuxiliaryLoss:
    """The loop's auxiliary loss for dann or mmd, drawing augmented target batches."""
    contract = backbone.contract
    loader = labelled_loader(target, contract, tokenizer=backbone.tokenizer, train=True, batch_size=batch_size,
                             num_workers=num_workers if contract.modality == "image" else 0,
                             randaugment=randaugment, min_crop=min_crop)
    if config.method == "dann":
        return DomainAdversarialLoss(config, contract.feature_dim, loader)
    return MmdLoss(config, loader)
