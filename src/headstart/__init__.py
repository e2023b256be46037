"""headstart: transfer learning from a pre-trained model to your small labelled data set."""

__version__ = "0.1.0"

from .backbones import build_backbone, list_backbones, register_backbone  # noqa: E402
from .contract import InputContract  # noqa: E402
from .data import ImageFiles, ImageFolder, LabelledData, TextTable  # noqa: E402
from .errors import ConfigError, DataError, HeadstartError, WeightsUnavailableError  # noqa: E402
from .evaluation import classification_metrics  # noqa: E402
from .features import extract_features  # noqa: E402
from .comparison import compare_strategies  # noqa: E402
from .ranking import rank  # noqa: E402
from .strategies import BitFitConfig, FinetuneConfig, LinearProbeConfig, LoraConfig  # noqa: E402
from .transfer import NotFittedError, Transfer, load  # noqa: E402
from . import adaptation  # noqa: E402 - hs.adaptation: domain adaptation methods and the shift score

__all__ = [
    "BitFitConfig",
    "adaptation",
    "ConfigError",
    "DataError",
    "FinetuneConfig",
    "LinearProbeConfig",
    "LoraConfig",
    "compare_strategies",
    "rank",
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
