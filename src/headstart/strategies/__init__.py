"""Transfer strategies: each a small typed config and the code that trains with it."""

from .linear_probe import LinearProbeConfig, fit_linear_probe_strategy

STRATEGIES = {"linear-probe": LinearProbeConfig}

__all__ = ["STRATEGIES", "LinearProbeConfig", "fit_linear_probe_strategy"]
