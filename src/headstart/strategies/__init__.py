"""Transfer strategies: each one registered class with its own typed config.

Importing this package registers the built-in strategies (in the order the CLI lists them);
:func:`get_strategy` and :func:`strategy_names` read the registry.
"""

from .base import ComputeContext, FitJob, Strategy, get_strategy, make_config, register_strategy, strategy_names
from .linear_probe import LinearProbe, LinearProbeConfig, fit_linear_probe_strategy
from .finetune import Finetune, FinetuneConfig, LpFt, Scratch
from .peft_tuning import BitFit, BitFitConfig, Lora, LoraConfig, ParameterEfficient
from .network import NetworkPlan, NetworkStrategy, TrainingConfig, train_network

__all__ = [
    "BitFit", "BitFitConfig", "ComputeContext", "Finetune", "FinetuneConfig", "FitJob", "LinearProbe",
    "LinearProbeConfig", "Lora", "LoraConfig", "LpFt", "NetworkPlan", "NetworkStrategy", "ParameterEfficient", "Scratch",
    "Strategy", "TrainingConfig", "fit_linear_probe_strategy", "get_strategy", "make_config", "register_strategy",
    "strategy_names", "train_network",
]
