"""The adaptation-method registry and the base class every method extends.

A method is one class registered by :func:`register_adaptation`, owning its config class,
the strategies it composes with, and the hooks ``Transfer.fit`` calls: features for a head
(coral, adabn), extra loss callbacks for the training loop (dann, mmd), and a last change to
the fitted network (adabn). Adding a method means adding its config to ``configs.py`` and one
module under ``adaptation/``, named in the registry's ``modules`` below.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ..config import Config
from ..data import LabelledData
from ..errors import ConfigError, DataError
from ..registry import Registry

if TYPE_CHECKING:
    from ..strategies.base import FitJob, Strategy
    from ..training import Callback

__all__ = ["AdaptationMethod", "register_adaptation", "get_adaptation", "adaptation_names", "make_adaptation"]


class AdaptationMethod:
    """Domain adaptation to unlabelled target data, applied around a strategy's fit.

    ``strategies`` names the strategies the method composes with; the first is its default.
    """

    name: ClassVar[str]
    config_class: ClassVar[type[Config]]
    strategies: ClassVar[tuple[str, ...]]

    def __init__(self, config: Config | dict | None = None) -> None:
        self.config = self.make_config(config)

    @classmethod
    def make_config(cls, config: Config | dict | None) -> Config:
        if config is None:
            return cls.config_class()
        if isinstance(config, cls.config_class):
            return config
        if not isinstance(config, dict):
            raise ConfigError(f"The options of {cls.name} must be a {cls.config_class.__name__} or a dict. "
                              f"Got {type(config).__name__}.")
        foreign = sorted(set(config) - set(cls.config_class.__dataclass_fields__))
        if foreign:
            raise ConfigError(f"{', '.join(foreign)} does not apply to the {cls.name} method; its options are: "
                              f"{', '.join(cls.config_class.__dataclass_fields__) or 'none'}.")
        return cls.config_class(**config)

    def to_dict(self) -> dict:
        """What ``config.yaml`` records: the method and its options."""
        return {"method": self.name, **asdict(self.config)}

    # -- checks, before any model work --------------------------------------------------------
    def check(self, strategy: type[Strategy], train: LabelledData, target: LabelledData | None) -> None:
        """Reject a strategy the method cannot compose with, a missing target, and a target of
        the other modality."""
        if strategy.name not in self.strategies:
            raise ConfigError(f"adaptation method {self.name} does not work with strategy '{strategy.name}'; use "
                              "strategy " + " or ".join(f"'{s}'" for s in self.strategies) + ".")
        if target is None:
            raise ConfigError(f"adaptation method {self.name} needs unlabelled target data: call "
                              "`fit(train, target=...)`.")
        if target.modality != train.modality:
            raise DataError(f"The target {target.source} holds {target.modality} data but the source {train.source} "
                            f"holds {train.modality}; both domains must be of one modality.")
        if len(target) < 2:
            raise DataError(f"The target {target.source} has {len(target)} sample; adaptation needs at least 2.")

    def check_backbone(self, job: FitJob) -> None:
        """Reject a backbone the method cannot work on (AdaBN needs BatchNorm)."""

    # -- hooks ------------------------------------------------------------------------------
    def head_features(self, job: FitJob) -> tuple[np.ndarray, np.ndarray]:
        """Train and validation features a head is fit on (a linear probe, lp-ft's first stage)."""
        return job.features(job.train, "train features"), job.features(job.val, "validation features")

    def training_callbacks(self, job: FitJob, config: Config) -> list[Callback]:
        """Callbacks that join the training loop of a network strategy (extra losses)."""
        return []

    def after_fit(self, job: FitJob, strategy: Strategy) -> None:
        """Change the fitted network once training is over (AdaBN's target statistics)."""


# The built-in methods' modules, imported (registering their classes) on the registry's first use.
_METHODS: Registry[AdaptationMethod] = Registry("adaptation method", modules=[
    f"headstart.adaptation.{module}" for module in ("coral", "adabn", "dann", "mmd")])
# Class decorator: make an adaptation method available by its ``name`` (API, CLI, compare).
register_adaptation = _METHODS.register
adaptation_names = _METHODS.names  # registered names, in registration order
get_adaptation = _METHODS.get  # the class registered under a name; an unknown name is a clear error


def make_adaptation(adapt: str | dict | Config | AdaptationMethod | None) -> AdaptationMethod | None:
    """A method from its name, a dict ``{"method": name, **options}``, its config, or itself."""
    if adapt is None or isinstance(adapt, AdaptationMethod):
        return adapt
    if isinstance(adapt, str):
        return get_adaptation(adapt)()
    if isinstance(adapt, dict):
        options = dict(adapt)
        return get_adaptation(options.pop("method", None) or "")(options)
    for cls in _METHODS.classes():
        if isinstance(adapt, cls.config_class):
            return cls(adapt)
    raise ConfigError(f"`adapt` must be a method name ({', '.join(_METHODS.names())}), a dict or a method config. "
                      f"Got {type(adapt).__name__}.")
