"""headstart: transfer learning from a pre-trained model to your small labelled data set.

The public names below are imported on first use (PEP 562), so ``import headstart`` (and
``headstart.runtime``, the torch-free predictor of exported bundles) costs nothing until a
name that needs torch is touched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_exports
from ._version import __version__

_EXPORTS = {
    "build_backbone": "backbones", "list_backbones": "backbones", "register_backbone": "backbones",
    "InputContract": "contract",
    "ImageFiles": "data", "ImageFolder": "data", "ImageTable": "data", "LabelledData": "data", "TextTable": "data",
    "ConfigError": "errors", "DataError": "errors", "HeadstartError": "errors", "WeightsUnavailableError": "errors",
    "classification_metrics": "evaluation",
    "extract_features": "features",
    "BitFitConfig": "strategies", "FinetuneConfig": "strategies", "LinearProbeConfig": "strategies",
    "LoraConfig": "strategies", "Strategy": "strategies", "TrainingConfig": "strategies",
    "get_strategy": "strategies", "register_strategy": "strategies", "strategy_names": "strategies",
    "NotFittedError": "transfer", "Transfer": "transfer", "clone": "transfer", "load": "ensemble", "Ensemble": "ensemble",
    "compare_strategies": "comparison",
    "rank": "ranking",
    "audit": "data_audit", "Audit": "data_audit",
    "pretrain": "pretraining",
    "auto": "autopilot", "resume_auto": "autopilot",
}
_SUBMODULES = {"adaptation"}  # hs.adaptation: domain adaptation methods and the shift score

__all__ = ["__version__", "adaptation", *_EXPORTS]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, _SUBMODULES)


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from . import adaptation
    from .backbones import build_backbone, list_backbones, register_backbone
    from .comparison import compare_strategies
    from .contract import InputContract
    from .data_audit import Audit, audit
    from .pretraining import pretrain
    from .data import ImageFiles, ImageFolder, ImageTable, LabelledData, TextTable
    from .errors import ConfigError, DataError, HeadstartError, WeightsUnavailableError
    from .evaluation import classification_metrics
    from .features import extract_features
    from .ranking import rank
    from .strategies import (BitFitConfig, FinetuneConfig, LinearProbeConfig, LoraConfig, Strategy,
                             TrainingConfig, get_strategy, register_strategy, strategy_names)
    from .ensemble import Ensemble, load
    from .transfer import NotFittedError, Transfer, clone
