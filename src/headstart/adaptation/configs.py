"""The configs of the built-in adaptation methods, and what each adapts, without torch.

Each method's class (``coral.py``, ``adabn.py``, ``dann.py``, ``mmd.py``) owns its config through
``config_class``; the configs live here, with nothing but ``config.py`` imported, so the command
line builds ``adapt``'s flags from them without loading torch. ``tests/test_cli.py`` checks
:data:`ADAPTATION_CONFIGS` and :data:`DEFAULT_STRATEGIES` against the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..config import Config, at_least, one_of, option

__all__ = ["ADAPTATION_CONFIGS", "AdaBNConfig", "CoralConfig", "DEFAULT_STRATEGIES", "DannConfig", "MmdConfig"]


@dataclass
class CoralConfig(Config):
    """Options of ``coral``."""

    owner: ClassVar[str] = "coral"
    regularisation: float = option(1.0, (
        "added to both covariances' diagonals, in units of the mean feature variance "
        "(the paper's 1 on standardised features); larger is a gentler alignment"), at_least(0, strict=True))
    align_mean: bool = option(True, "also move the source mean onto the target mean", one_of(True, False))


@dataclass
class AdaBNConfig(Config):
    """Options of ``adabn``."""

    owner: ClassVar[str] = "adabn"
    source_statistics: bool = option(True, (
        "fit the head on source features computed with statistics re-estimated on the source (as in "
        "the paper); off: the pre-trained statistics and cached features"), one_of(True, False))


@dataclass
class DannConfig(Config):
    """Options of ``dann``."""

    owner: ClassVar[str] = "dann"
    weight: float = option(1.0, "weight of the domain-classification loss", at_least(0, strict=True))
    hidden: int = option(256, "hidden units of the domain classifier's two layers", at_least(1, int))
    gamma: float = option(10.0, "steepness of the reversal coefficient's ramp 2/(1+exp(-gamma p))-1",
                          at_least(0, strict=True))


@dataclass
class MmdConfig(Config):
    """Options of ``mmd``."""

    owner: ClassVar[str] = "mmd"
    weight: float = option(1.0, "weight of the MMD penalty", at_least(0, strict=True))
    kernels: int = option(5, "number of Gaussian kernels", at_least(1, int))
    kernel_mul: float = option(2.0, "ratio between neighbouring kernels' bandwidths", at_least(1, strict=True))


# Every built-in method's config, in registration order (``Registry`` imports the modules in this order).
ADAPTATION_CONFIGS: dict[str, type[Config]] = {
    "coral": CoralConfig, "adabn": AdaBNConfig, "dann": DannConfig, "mmd": MmdConfig}
# The strategy each method adapts unless told otherwise: the first of its class's ``strategies``.
DEFAULT_STRATEGIES: dict[str, str] = {"coral": "linear-probe", "adabn": "linear-probe", "dann": "finetune",
                                      "mmd": "finetune"}
