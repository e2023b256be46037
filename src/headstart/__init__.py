"""headstart: transfer learning from a pre-trained model to your small labelled data set."""

from ._version import __version__
from .backbones import build_backbone, list_backbones, register_backbone
from .contract import InputContract
from .data import ImageFiles, ImageFolder, LabelledData, TextTable
from .errors import ConfigError, DataError, HeadstartError, WeightsUnavailableError
from .evaluation import classification_metrics
from .features import extract_features
from .strategies import (BitFitConfig, FinetuneConfig, LinearProbeConfig, LoraConfig, Strategy, TrainingConfig,
                         get_strategy, register_strategy, strategy_names)
from .transfer import NotFittedError, Transfer, clone, load
from .comparison import compare_strategies
from .ranking import rank
from . import adaptation  # hs.adaptation: domain adaptation methods and the shift score

__all__ = [
    "__version__",
    "BitFitConfig",
    "adaptation",
    "ConfigError",
    "DataError",
    "FinetuneConfig",
    "LinearProbeConfig",
    "LoraConfig",
    "Strategy",
    "TrainingConfig",
    "clone",
    "compare_strategies",
    "get_strategy",
    "rank",
    "register_strategy",
    "strategy_names",
    "HeadstartError",
    "ImageFiles",
    "ImageFolder",
    "InputContract",
    "LabelledData",
    "NotFittedError",
    "TextTable",
    "Transfer",
    "WeightsUnavailableError",
    "build_backbone",
    "classification_metrics",
    "extract_features",
    "list_backbones",
    "load",
    "register_backbone",
]
