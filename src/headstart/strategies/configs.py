"""The configs of the built-in strategies, and which strategy each belongs to, without torch.

Each strategy's class (``linear_probe.py``, ``finetune.py``, ``peft_tuning.py``) owns its config
through ``config_class``; the configs themselves live here, with nothing but ``config.py`` imported,
so the command line builds its flags and help from them without loading torch.
:data:`STRATEGY_CONFIGS` lists every built-in strategy in registration order (the order the CLI
shows them); ``tests/test_cli.py`` checks it against the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from ..config import Config, at_least, between, one_of, option, satisfies
from ..errors import ConfigError

__all__ = ["BitFitConfig", "DEFAULT_COMPARISON", "FinetuneConfig", "LinearProbeConfig", "LoraConfig",
           "STRATEGY_CONFIGS", "TrainingConfig"]


def _is_randaugment_policy(policy: str) -> bool:
    """Whether timm parses ``policy`` as RandAugment (it asserts deep inside the data pipeline otherwise)."""
    from timm.data.auto_augment import rand_augment_transform

    if not isinstance(policy, str) or not policy.startswith("rand"):
        return False
    try:
        rand_augment_transform(policy, {})
    except (AssertionError, ValueError):
        return False
    return True


@dataclass
class TrainingConfig(Config):
    """Options every network strategy shares: the budget, the schedule, the regularisation."""

    epochs: int = option(5, "passes over the training data", at_least(1, int))
    lr: float = option(3e-4, "peak learning rate of the backbone's top layer group (AdamW)", at_least(0, strict=True))
    head_lr_scale: float = option(10.0, "the new head's lr relative to lr: it starts from nothing",
                                  at_least(0, strict=True))
    weight_decay: float = option(0.01, "AdamW weight decay (none on biases and norms)", at_least(0))
    batch_size: int = option(32, "training batch size, over all processes (--batch-size is the feature-extraction "
                             "batch)", at_least(1, int), flag="train-batch")
    accumulate: int = option(1, "gradient accumulation: each --train-batch runs as K micro-batches, one after another "
                             "(same result, about 1/K of the activation memory)", at_least(1, int))
    warmup_epochs: float = option(0.5, "epochs of linear warm-up before the cosine decay", at_least(0))
    patience: int = option(3, "early-stopping patience in epochs on validation macro F1 (0: off)", at_least(0, int))
    clip_norm: float = option(1.0, "gradient-norm clipping (0: off)", at_least(0))
    dropout: float = option(0.1, "dropout before the head", between(0, 1, high_open=True))
    label_smoothing: float = option(0.1, "label smoothing of the cross-entropy", between(0, 1, high_open=True))
    min_crop: float = option(0.25, "smallest share of an image a random training crop keeps",
                             between(0, 1, low_open=True))
    randaugment: str | None = option(None, "timm RandAugment policy for images, e.g. rand-m9-mstd0.5",
                                     satisfies("a timm RandAugment policy such as 'rand-m9-mstd0.5'",
                                               _is_randaugment_policy))
    class_weight: str | None = option(None, "'balanced' weighs classes inversely to their frequency (for imbalanced data)",
                                      one_of(None, "balanced"))


@dataclass
class LinearProbeConfig(Config):
    """Options of the ``linear-probe`` strategy."""

    owner: ClassVar[str] = "linear-probe"
    head: Literal["linear", "mlp"] = option(
        "linear", "linear: logistic regression with C chosen on validation; mlp: one hidden layer with dropout",
        one_of("linear", "mlp"))
    class_weight: Literal["balanced"] | None = option(
        None, "'balanced' weighs classes inversely to their frequency (for imbalanced data)", one_of(None, "balanced"))
    hidden: int = option(512, "hidden units of the mlp head", at_least(1, int))
    dropout: float = option(0.2, "dropout before the last layer of the mlp head", between(0, 1, high_open=True))
    C: float | None = option(None, "inverse regularisation of the linear head; None chooses it on the validation split",
                             at_least(0, strict=True))


@dataclass
class FinetuneConfig(TrainingConfig):
    """Options of ``finetune``, ``lp-ft`` and ``scratch`` (one config: same budget, fair comparison)."""

    owner: ClassVar[str] = "finetune"
    unfreeze: str = option("all", "'all', or how many top layer groups train",
                           satisfies("'all' or an int >= 0", lambda v: v == "all" or str(v).isdigit()))
    gradual: int = option(0, "unfreeze one more group every N epochs (0: off)", at_least(0, int))
    layer_decay: float = option(1.0, "each group's lr is the group above's times this", between(0, 1, low_open=True))
    l2sp: float = option(0.0, "L2-SP strength: pull the backbone towards its pre-trained weights", at_least(0))
    train_bn: bool = option(False, "update BatchNorm statistics while fine-tuning; off keeps the pre-trained ones "
                                   "(better on small data)")
    lpft_lr_scale: float = option(0.1, "lp-ft: fine-tuning lr relative to lr", at_least(0, strict=True))

    def __post_init__(self) -> None:
        self.unfreeze = str(self.unfreeze)
        super().__post_init__()


def _target_list(value) -> list[str] | None:
    if isinstance(value, str):
        return [name.strip() for name in value.split(",") if name.strip()]
    return None if value is None else list(value)


@dataclass
class LoraConfig(TrainingConfig):
    """Options of ``lora``: the shared training options plus the adapter's shape.

    The default lr (3e-3) is ten times finetune's: the adapters start at zero and only a few
    weights move. Measured with bench/peft_compare.py (3 epochs): flowers5 slice 0.57 / 0.61 /
    0.20 accuracy at 1e-3 / 3e-3 / 1e-2; amazon 0.925 at both 1e-3 and 3e-3.
    """

    owner: ClassVar[str] = "lora"
    lr: float = option(3e-3, "peak learning rate of the adapters (AdamW)", at_least(0, strict=True))
    lora_rank: int = option(8, "rank r of each low-rank update", at_least(1, int))
    lora_alpha: float = option(16.0, "scale of the update is alpha / r", at_least(0, strict=True))
    lora_dropout: float = option(0.0, "dropout on the adapters' input", between(0, 1, high_open=True))
    lora_targets: list[str] | None = option(
        None, "names of the layers that get adapters (comma-separated in the CLI); default by architecture: "
        "attention query/value, ViT qkv, or pointwise convolutions")
    lora_bias: str = option("none", "'all': the backbone's biases train beside the adapters (peft's bias='all'); "
                            "'none': adapters only", one_of("none", "all"))

    def __post_init__(self) -> None:
        self.lora_targets = _target_list(self.lora_targets)
        if self.lora_targets is not None and not self.lora_targets:
            raise ConfigError("The 'lora_targets' option of lora is empty. Give layer names, e.g. "
                              "`--lora-targets query,value`, or leave it out for the default.")
        super().__post_init__()


@dataclass
class BitFitConfig(TrainingConfig):
    """Options of ``bitfit``: the shared training options; only biases (and norms) train.

    Default lr 1e-3: 0.914 / 0.925 on amazon and 0.58 / 0.53 on the flowers5 slice at 1e-3 / 3e-3.
    """

    owner: ClassVar[str] = "bitfit"
    lr: float = option(1e-3, "peak learning rate of the biases (AdamW)", at_least(0, strict=True))
    bitfit_norms: bool = option(False, "also train the scales of normalisation layers")


# Every built-in strategy's config, in registration order (``Registry`` imports the modules in this order).
STRATEGY_CONFIGS: dict[str, type[Config]] = {
    "linear-probe": LinearProbeConfig, "finetune": FinetuneConfig, "lp-ft": FinetuneConfig,
    "scratch": FinetuneConfig, "lora": LoraConfig, "bitfit": BitFitConfig,
}
# The strategies ``compare`` trains when none are named.
DEFAULT_COMPARISON = ("scratch", "linear-probe", "finetune", "lp-ft")
