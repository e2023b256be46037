"""Transfer strategies: each a small typed config and the code that trains with it."""

from ..errors import ConfigError, did_you_mean
from . import finetune
from .finetune import FinetuneConfig, train_network
from .linear_probe import LinearProbeConfig, fit_linear_probe_strategy
from .peft_tuning import PEFT_STRATEGIES, BitFitConfig, LoraConfig

STRATEGIES = {"linear-probe": LinearProbeConfig, "finetune": FinetuneConfig, "lp-ft": FinetuneConfig,
              "scratch": FinetuneConfig, "lora": LoraConfig, "bitfit": BitFitConfig}
NETWORK_STRATEGIES = finetune.NETWORK_STRATEGIES + PEFT_STRATEGIES


def make_config(strategy: str, config: object | dict | None = None
                ) -> LinearProbeConfig | FinetuneConfig | LoraConfig | BitFitConfig:
    """The strategy's typed config from a config object, a dict of its fields, or None (defaults).

    Options that do not belong to the strategy are an error naming them, so a flag that
    would silently do nothing (``--epochs`` for a linear probe) never passes.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"Unknown strategy '{strategy}'.{did_you_mean(strategy, STRATEGIES)} "
                          f"Choose one of: {', '.join(STRATEGIES)}.")
    config_class = STRATEGIES[strategy]
    if config is None:
        return config_class()
    if isinstance(config, dict):
        fields = config_class.__dataclass_fields__
        foreign = sorted(set(config) - set(fields))
        if foreign:
            raise ConfigError(f"{', '.join(foreign)} does not apply to the {strategy} strategy; "
                              f"its options are: {', '.join(fields)}.")
        return config_class(**config)
    if type(config) is not config_class:  # a LoraConfig is a FinetuneConfig, but not for finetune
        raise ConfigError(f"The config of {strategy} must be a {config_class.__name__}. Got {type(config).__name__}.")
    return config

__all__ = ["NETWORK_STRATEGIES", "PEFT_STRATEGIES", "STRATEGIES", "make_config", "FinetuneConfig", "LinearProbeConfig",
           "LoraConfig", "BitFitConfig", "fit_linear_probe_strategy", "train_network"]
