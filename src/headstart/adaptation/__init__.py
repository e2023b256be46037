"""Domain adaptation: learn from labelled source data for an unlabelled target domain.

Each method is one registered class in its own module (``coral``, ``adabn``, ``dann``,
``mmd``) with a small config dataclass; ``Transfer(..., adapt=...)`` applies it, and
``measure_shift`` tells how far apart two domains are before anything is trained.
The configs (``configs.py``) import no torch; every other name is imported on first use
(PEP 562), and the registry imports the methods' modules the first time it is read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports
from .configs import ADAPTATION_CONFIGS, DEFAULT_STRATEGIES, AdaBNConfig, CoralConfig, DannConfig, MmdConfig

_EXPORTS = {
    "AdaptationMethod": "base", "adaptation_names": "base", "get_adaptation": "base", "make_adaptation": "base",
    "register_adaptation": "base",
    "Coral": "coral", "CoralAlignment": "coral",
    "AdaBN": "adabn", "batchnorm_layers": "adabn", "reestimate_batchnorm": "adabn", "require_batchnorm": "adabn",
    "with_batchnorm_statistics": "adabn",
    "Dann": "dann", "DomainAdversarialLoss": "dann", "GradientReversal": "dann", "reverse_gradient": "dann",
    "Mmd": "mmd", "MmdLoss": "mmd", "multi_kernel_mmd": "mmd",
    "DomainShift": "shift", "domain_shift": "shift", "measure_shift": "shift",
    "ganin_schedule": "target_batches",
}

__all__ = [
    "ADAPTATION_CONFIGS", "AdaBN", "AdaBNConfig", "AdaptationMethod", "adaptation_names", "batchnorm_layers", "Coral",
    "CoralAlignment", "CoralConfig", "DEFAULT_STRATEGIES", "Dann", "DannConfig", "domain_shift",
    "DomainAdversarialLoss", "DomainShift", "ganin_schedule", "get_adaptation", "GradientReversal", "make_adaptation",
    "measure_shift", "Mmd", "MmdConfig", "MmdLoss", "multi_kernel_mmd", "reestimate_batchnorm", "register_adaptation",
    "require_batchnorm", "reverse_gradient", "with_batchnorm_statistics",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .adabn import AdaBN, batchnorm_layers, reestimate_batchnorm, require_batchnorm, with_batchnorm_statistics
    from .base import AdaptationMethod, adaptation_names, get_adaptation, make_adaptation, register_adaptation
    from .coral import Coral, CoralAlignment
    from .dann import Dann, DomainAdversarialLoss, GradientReversal, reverse_gradient
    from .mmd import Mmd, MmdLoss, multi_kernel_mmd
    from .shift import DomainShift, domain_shift, measure_shift
    from .target_batches import ganin_schedule
