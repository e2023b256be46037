"""Domain adaptation: learn from labelled source data for an unlabelled target domain.

Each method is one registered class in its own module (``coral``, ``adabn``, ``dann``,
``mmd``) with a small config dataclass; ``Transfer(..., adapt=...)`` applies it, and
``measure_shift`` tells how far apart two domains are before anything is trained.
"""

from __future__ import annotations

from .base import AdaptationMethod, adaptation_names, get_adaptation, make_adaptation, register_adaptation
from .coral import Coral, CoralAlignment, CoralConfig
from .adabn import AdaBN, AdaBNConfig, batchnorm_layers, reestimate_batchnorm, require_batchnorm, with_batchnorm_statistics
from .dann import Dann, DannConfig, DomainAdversarialLoss, GradientReversal, reverse_gradient
from .mmd import Mmd, MmdConfig, MmdLoss, multi_kernel_mmd
from .shift import DomainShift, domain_shift, measure_shift
from .target_batches import ganin_schedule

__all__ = [
    "AdaBN", "AdaBNConfig", "AdaptationMethod", "adaptation_names", "batchnorm_layers", "Coral", "CoralAlignment", "CoralConfig",
    "Dann", "DannConfig", "domain_shift", "DomainAdversarialLoss", "DomainShift", "ganin_schedule", "get_adaptation",
    "GradientReversal", "make_adaptation", "measure_shift", "Mmd", "MmdConfig", "MmdLoss", "multi_kernel_mmd",
    "reestimate_batchnorm", "register_adaptation", "require_batchnorm", "reverse_gradient",
    "with_batchnorm_statistics",
]
