"""The strategy registry and the base class every transfer strategy extends.

A strategy is one class, registered by :func:`register_strategy` (timm's ``@register_model``
is the model). It owns its config class, how it trains, which tensors a run stores and how
it restores them; :class:`~headstart.transfer.Transfer` only delegates. Adding a strategy
means adding its config to ``configs.py`` and one module under ``strategies/``, named in the
registry's ``modules`` below and in ``strategies/__init__``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..backbones import Backbone
from ..config import Config
from ..data import LabelledData
from ..errors import ConfigError
from ..inference import network_probabilities
from ..registry import Registry
from ..training import Callback, TransferNet

if TYPE_CHECKING:
    from ..adaptation import AdaptationMethod

__all__ = ["ComputeContext", "FitJob", "Strategy", "register_strategy", "get_strategy", "strategy_names",
           "make_config"]

Progress = Callable[..., None]
FeatureFn = Callable[..., np.ndarray]


@dataclass
class ComputeContext:
    """The backbone and how to run it: what predicting needs from the estimator.

    ``features(data, stage, module=None)`` gives the frozen backbone's features of ``data``
    (cached); with ``module`` it embeds with a modified copy of the backbone (never cached).
    ``view`` (a test-time view, ``inference.TEST_VIEWS``) asks for predictions of that view of every
    image: ``features`` then gives the view's features (cached under a key of their own), and
    :meth:`Strategy.predict_proba` passes it to the network, so no strategy handles views itself.
    """

    backbone: Backbone
    device: torch.device
    batch_size: int
    num_workers: int
    features: FeatureFn
    progress: Progress | None = None
    view: str | None = None


@dataclass
class FitJob(ComputeContext):
    """Everything a strategy's ``fit`` needs, in one place; ``info`` collects what the fit
    chose and measured (saved under ``fit:`` in ``config.yaml``)."""

    classes: list[str] = field(default_factory=list)
    train: LabelledData | None = None
    val: LabelledData | None = None
    seed: int = 0
    strategy: Strategy | None = None
    target: LabelledData | None = None
    adaptation: AdaptationMethod | None = None
    checkpoint: Path | None = None
    resume: bool = False
    callbacks: Sequence[Callback] = ()
    info: dict = field(default_factory=dict)


class Strategy:
    """How a backbone is transferred: what trains, how, and what a run stores.

    Subclasses set ``name`` and ``config_class`` (the docstring says what trains) and implement :meth:`fit`. After
    ``fit`` (or :meth:`restore`), ``net_`` is the whole network: backbone, dropout and head.
    """

    name: ClassVar[str]
    config_class: ClassVar[type[Config]]
    trains_backbone: ClassVar[bool] = False  # the backbone's weights change: cached features no longer apply
    pretrained: ClassVar[bool] = True        # False: start from random weights (the scratch baseline)
    adapter: bool = False                     # a frozen base plus trained parts, to merge before export
    reads_features: ClassVar[bool] = True     # reads the frozen backbone's cached features (shared out under a launcher)
    # Fields runs of older versions recorded that this config no longer has, with the one value
    # they always held; reading such a run drops them.
    retired_fields: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: Config | dict | None = None) -> None:
        self.config = self.make_config(config)
        self.net_: TransferNet | None = None
        self.history_: list[dict] = []  # one row per epoch, for strategies that train with the loop

    # -- configs ---------------------------------------------------------------------------
    @classmethod
    def make_config(cls, config: Config | dict | None = None) -> Config:
        """The typed config from a config object, a dict of its fields, or None (defaults).

        Options that do not belong to the strategy are an error naming them, so a flag that
        would silently do nothing (``--epochs`` for a linear probe) never passes.
        """
        if config is None:
            return cls.config_class()
        if isinstance(config, dict):
            fields = cls.config_class.__dataclass_fields__
            given = {k: v for k, v in config.items() if not (k in cls.retired_fields and k not in fields
                                                                 and v == cls.retired_fields[k])}
            foreign = sorted(set(given) - set(fields))
            if foreign:
                raise ConfigError(f"{', '.join(foreign)} does not apply to the {cls.name} strategy; "
                                  f"its options are: {', '.join(fields)}.")
            return cls.config_class(**given)
        if type(config) is not cls.config_class:
            raise ConfigError(f"The config of {cls.name} must be a {cls.config_class.__name__}. "
                              f"Got {type(config).__name__}.")
        return config

    @classmethod
    def config_for_budget(cls, budget: Config | None) -> Config:
        """This strategy's config when several strategies share one training budget (``compare``):
        strategies that train no network ignore it."""
        return cls.config_class()

    unsearched: ClassVar[frozenset[str]] = frozenset()  # config fields a search cannot improve
    unused: ClassVar[frozenset[str]] = frozenset()  # config fields this strategy never reads (a shared config's)

    @classmethod
    def option_applies(cls, name: str, config: dict, modality: str | None = None) -> bool:
        """Whether the config field ``name`` changes what this strategy does, given the rest of
        ``config`` and the data's ``modality`` (None: unknown). The report lists only these."""
        return name not in cls.unused

    @classmethod
    def worth_searching(cls, name: str, fixed: dict) -> bool:
        """Whether searching the config field ``name`` can change anything, given pinned ``fixed`` values."""
        return name not in cls.unsearched

    def config_dict(self) -> dict:
        """The config as ``config.yaml`` records it."""
        return asdict(self.config)

    # -- training --------------------------------------------------------------------------
    def fit(self, job: FitJob) -> None:
        """Train on ``job.train``, choosing what needs choosing on ``job.val``; set ``net_``."""
        raise NotImplementedError

    def refit_config(self, info: dict) -> Config | None:
        """The config of a refit on train + validation with what this fit chose (``info`` is the fit's
        ``FitJob.info``); None when nothing was held back for good."""
        return None

    def replace_backbone(self, module: nn.Module) -> None:
        """Swap the fitted network's backbone (AdaBN's target statistics)."""
        self.net_.backbone = module

    # -- using the fitted network ----------------------------------------------------------
    def predict_proba(self, data: LabelledData, context: ComputeContext) -> np.ndarray:
        """Class probabilities of every sample (columns in the order of the classes)."""
        return network_probabilities(self.net_, data, context.backbone, context.device, context.batch_size,
                                     context.num_workers, context.progress, view=context.view)

    def trainable_parameters(self) -> int:
        """How many weights the strategy trained: by default all of the network's."""
        return self.total_parameters()

    def total_parameters(self) -> int:
        return sum(p.numel() for p in self.net_.parameters())

    # -- persistence -----------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The tensors a run stores: by default the whole network."""
        return dict(self.net_.state_dict())

    def run_entries(self) -> dict:
        """Extra top-level entries of ``config.yaml`` (e.g. whether a checkpoint is an adapter)."""
        return {}

    @classmethod
    def needs_pretrained_base(cls, run_config: dict, tensor_names: Sequence[str]) -> bool:
        """Whether a run's tensors sit on top of the pre-trained backbone (whose weights digest
        must then match), or hold every weight themselves."""
        return False

    def restore(self, backbone: Backbone, n_classes: int, tensors: dict[str, torch.Tensor], run_config: dict) -> None:
        """Rebuild ``net_`` from a run's tensors (the inverse of :meth:`state_tensors`)."""
        head = nn.Linear(backbone.contract.feature_dim, n_classes)
        self.net_ = TransferNet(backbone.module, head, getattr(self.config, "dropout", 0.0))
        self.net_.load_state_dict(tensors, strict=True)
        self.as_trained(backbone)

    def as_trained(self, backbone: Backbone) -> None:
        """Put the restored network in eval mode and the memory layout it trained in: the same
        kernels run, so it predicts exactly as before saving."""
        self.net_.eval()
        if self.trains_backbone and backbone.contract.channels_last:
            self.net_.to(memory_format=torch.channels_last)

    def merge(self) -> None:
        """Fold an adapter into the backbone; only parameter-efficient strategies have one."""
        raise ConfigError(f"Only lora and bitfit runs have an adapter to merge; this is a {self.name} run.")


# The built-in strategies' modules, imported (registering their classes) on the registry's first use.
_STRATEGIES: Registry[Strategy] = Registry("strategy", modules=[
    f"headstart.strategies.{module}" for module in ("linear_probe", "finetune", "peft_tuning")])
# Class decorator: make a strategy available by its ``name`` everywhere (API, CLI, search, compare).
register_strategy = _STRATEGIES.register
strategy_names = _STRATEGIES.names  # registered names, in registration order
get_strategy = _STRATEGIES.get  # the class registered under a name; an unknown name is a clear error


def make_config(strategy: str, config: Config | dict | None = None) -> Config:
    """The named strategy's typed config (see :meth:`Strategy.make_config`)."""
    return get_strategy(strategy).make_config(config)
