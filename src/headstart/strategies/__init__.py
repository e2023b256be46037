"""Transfer strategies: each a small typed config and the code that trains with it."""

from .finetune import NETWORK_STRATEGIES, FinetuneConfig, train_network
from .linear_probe import LinearProbeConfig, fit_linear_probe_strategy

STRATEGIES = {"linear-probe": LinearProbeConfig, "finetune": FinetuneConfig, "lp-ft": FinetuneConfig,
              "scratch": FinetuneConfig}

__all__ = ["NETWORK_STRATEGIES", "STRATEGIES", "FinetuneConfig", "LinearProbeConfig", "fit_linear_probe_strategy",
           "train_network"]
