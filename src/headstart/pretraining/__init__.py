"""Pre-training: continue a backbone's pre-training on your own (unlabelled) data, or fine-tune it on a
labelled source set, and keep the result as a backbone (``run:PATH``) for the tasks that follow.

Methods (:func:`method_names`): ``tsdae`` and ``simcse`` for texts (sentence-transformers' losses),
``simclr`` for images (lightly), ``supervised`` on labelled data. The configs (``configs.py``) and the
method registry import no torch, so the command line reads them without loading it; every other name
is imported on first use (PEP 562).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports
from .configs import (METHOD_CONFIGS, PretrainConfig, SelfSupervisedConfig, SimclrConfig, SimcseConfig,
                      SupervisedConfig, TsdaeConfig)
from .methods import PretrainMethod, get_method, method_names, register_method

_EXPORTS = {"pretrain": "workflow", "resume_pretraining": "workflow", "PretrainArgs": "workflow",
            "PretrainResult": "workflow", "Pretraining": "workflow", "probe_gain": "probe", "probe_scores": "probe"}

__all__ = ["METHOD_CONFIGS", "PretrainConfig", "PretrainMethod", "SelfSupervisedConfig", "SimclrConfig", "SimcseConfig",
           "SupervisedConfig", "TsdaeConfig", "get_method", "method_names", "register_method", *_EXPORTS]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .probe import probe_gain, probe_scores
    from .workflow import PretrainArgs, PretrainResult, Pretraining, pretrain, resume_pretraining
