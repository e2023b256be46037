"""Transfer strategies: each one registered class with its own typed config.

The configs (``configs.py``) import no torch, so the command line reads them without loading it;
every other name is imported on first use (PEP 562). The registry imports the built-in strategies'
modules the first time it is read: :func:`get_strategy` and :func:`strategy_names` list them in
the order of :data:`~headstart.strategies.configs.STRATEGY_CONFIGS`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports
from .configs import (DEFAULT_COMPARISON, STRATEGY_CONFIGS, BitFitConfig, FinetuneConfig, LinearProbeConfig, LoraConfig,
                      TrainingConfig)

_EXPORTS = {
    "ComputeContext": "base", "FitJob": "base", "Strategy": "base", "get_strategy": "base", "make_config": "base",
    "register_strategy": "base", "strategy_names": "base",
    "LinearProbe": "linear_probe", "fit_linear_probe_strategy": "linear_probe",
    "Finetune": "finetune", "LpFt": "finetune", "Scratch": "finetune",
    "BitFit": "peft_tuning", "Lora": "peft_tuning", "ParameterEfficient": "peft_tuning",
    "NetworkPlan": "network", "NetworkStrategy": "network", "train_network": "network",
}

__all__ = [
    "BitFit", "BitFitConfig", "ComputeContext", "DEFAULT_COMPARISON", "Finetune", "FinetuneConfig", "FitJob",
    "LinearProbe", "LinearProbeConfig", "Lora", "LoraConfig", "LpFt", "NetworkPlan", "NetworkStrategy",
    "ParameterEfficient", "STRATEGY_CONFIGS", "Scratch", "Strategy", "TrainingConfig", "fit_linear_probe_strategy",
    "get_strategy", "make_config", "register_strategy", "strategy_names", "train_network",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .base import ComputeContext, FitJob, Strategy, get_strategy, make_config, register_strategy, strategy_names
    from .finetune import Finetune, LpFt, Scratch
    from .linear_probe import LinearProbe, fit_linear_probe_strategy
    from .network import NetworkPlan, NetworkStrategy, train_network
    from .peft_tuning import BitFit, Lora, ParameterEfficient
