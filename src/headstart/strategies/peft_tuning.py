"""Parameter-efficient transfer: ``lora`` (Hugging Face ``peft``) and ``bitfit``.

Both train through the same loop as ``finetune``; they differ only in which backbone
weights train. ``lora`` freezes the backbone and adds low-rank adapters to chosen layers
(Hu et al., ICLR 2022); ``bitfit`` trains only the backbone's biases, and optionally its
norm scales (Ben Zaken et al., ACL 2022). The new head always trains. A run stores only
what trained (adapter or biases, and the head); the frozen rest is rebuilt from the
pre-trained backbone, whose weights digest the run records.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ConfigError
from .finetune import FinetuneConfig

__all__ = ["LoraConfig", "BitFitConfig", "PEFT_STRATEGIES", "prepare_backbone", "trained_backbone_state",
           "restore_backbone", "merge_backbone", "default_lora_targets"]

PEFT_STRATEGIES = ("lora", "bitfit")

# Default LoRA targets, first set whose names exist wins: attention query/value projections of
# BERT-like encoders (BERT, RoBERTa, MiniLM), of other HF encoders (q_proj/v_proj, DistilBERT's
# q_lin/v_lin), the fused qkv of timm ViTs, and the pointwise convolutions of EfficientNet/MobileNet.
DEFAULT_TARGETS = (("query", "value"), ("q_proj", "v_proj"), ("q_lin", "v_lin"), ("qkv",), ("conv_pw", "conv_pwl"))
_LORA_LAYERS = (nn.Linear, nn.Conv2d, nn.Conv1d, nn.Embedding)
# Options of finetune that choose what trains or how far from the pre-trained weights: the
# parameter-efficient strategies decide that themselves.
_FINETUNE_ONLY = {"unfreeze": "all", "gradual": 0, "layer_decay": 1.0, "l2sp": 0.0, "lpft_lr_scale": 0.1,
                  "train_bn": False}


def _help(text: str) -> dict:
    return {"help": text}


def _reject_finetune_only(config: FinetuneConfig, strategy: str) -> None:
    changed = [name for name, default in _FINETUNE_ONLY.items() if getattr(config, name) != default]
    if changed:
        raise ConfigError(f"{', '.join(changed)} does not apply to the {strategy} strategy: it chooses what "
                          "trains itself and keeps the pre-trained BatchNorm statistics (part of the stored base). "
                          "Use `--strategy finetune` for those options.")


@dataclass
class LoraConfig(FinetuneConfig):
    """Options of ``lora``: finetune's training options plus the adapter's shape.

    The default lr (3e-3) is ten times finetune's: the adapters start at zero and only a few
    weights move. Measured with bench/peft_compare.py (3 epochs): flowers5 slice 0.57 / 0.61 /
    0.20 accuracy at 1e-3 / 3e-3 / 1e-2; amazon 0.925 at both 1e-3 and 3e-3.
    """

    lr: float = field(default=3e-3, metadata=_help("peak learning rate of the adapters (AdamW)"))
    lora_rank: int = field(default=8, metadata=_help("rank r of each low-rank update"))
    lora_alpha: float = field(default=16.0, metadata=_help("scale of the update is alpha / r"))
    lora_dropout: float = field(default=0.0, metadata=_help("dropout on the adapters' input"))
    lora_targets: list[str] | None = field(default=None, metadata=_help(
        "names of the layers that get adapters (comma-separated in the CLI); default by architecture: "
        "attention query/value, ViT qkv, or pointwise convolutions"))
    lora_bias: str = field(default="none", metadata=_help(
        "'all': the backbone's biases train beside the adapters (peft's bias='all'); 'none': adapters only"))

    def __post_init__(self) -> None:
        super().__post_init__()
        _reject_finetune_only(self, "lora")
        if self.lora_bias not in ("none", "all"):
            raise ConfigError(f"The 'lora_bias' option of lora must be 'none' or 'all'. Got {self.lora_bias!r} instead.")
        if isinstance(self.lora_targets, str):
            self.lora_targets = [name.strip() for name in self.lora_targets.split(",") if name.strip()]
        if self.lora_targets is not None:
            self.lora_targets = list(self.lora_targets)
            if not self.lora_targets:
                raise ConfigError("The 'lora_targets' option of lora is empty. Give layer names, e.g. "
                                  "`--lora-targets query,value`, or leave it out for the default.")
        if self.lora_rank < 1:
            raise ConfigError(f"The 'lora_rank' option of lora must be an int >= 1. Got {self.lora_rank} instead.")
        if not self.lora_alpha > 0:
            raise ConfigError(f"The 'lora_alpha' option of lora must be a float > 0. Got {self.lora_alpha} instead.")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"The 'lora_dropout' option of lora must be in [0, 1). Got {self.lora_dropout} instead.")


@dataclass
class BitFitConfig(FinetuneConfig):
    """Options of ``bitfit``: finetune's training options; only biases (and norms) train.

    Default lr 1e-3: 0.914 / 0.925 on amazon and 0.58 / 0.53 on the flowers5 slice at 1e-3 / 3e-3.
    """

    lr: float = field(default=1e-3, metadata=_help("peak learning rate of the biases (AdamW)"))
    bitfit_norms: bool = field(default=False, metadata=_help("also train the scales of normalisation layers"))

    def __post_init__(self) -> None:
        super().__post_init__()
        _reject_finetune_only(self, "bitfit")


def _layer_names(module: nn.Module) -> list[str]:
    """Short names of the layers LoRA can adapt, most frequent first (for messages)."""
    counts: dict[str, int] = {}
    for name, layer in module.named_modules():
        if isinstance(layer, _LORA_LAYERS) and name:
            short = name.rsplit(".", 1)[-1]
            counts[short] = counts.get(short, 0) + 1
    return sorted(counts, key=lambda n: -counts[n])


def default_lora_targets(module: nn.Module, backbone_name: str = "the backbone") -> list[str]:
    """The first of :data:`DEFAULT_TARGETS` whose layer names all exist in ``module``."""
    present = set(_layer_names(module))
    for targets in DEFAULT_TARGETS:
        if set(targets) <= present:
            return list(targets)
    raise ConfigError(f"headstart knows no default LoRA targets for {backbone_name}. Name the layers to adapt with "
                      f"`--lora-targets NAME[,NAME]`; its layers include: {', '.join(_layer_names(module)[:12])}.")


def _check_targets(module: nn.Module, targets: list[str], backbone_name: str) -> None:
    """Every target must name at least one layer LoRA can adapt (peft matches name suffixes)."""
    layers = [name for name, layer in module.named_modules() if isinstance(layer, _LORA_LAYERS)]
    for target in targets:
        if not any(name == target or name.endswith("." + target) for name in layers):
            raise ConfigError(f"The LoRA target '{target}' matches no Linear, Conv or Embedding layer of "
                              f"{backbone_name}. Its layers include: {', '.join(_layer_names(module)[:12])}; "
                              "fix `--lora-targets`.")


def _peft_config(config: LoraConfig, module: nn.Module, backbone_name: str):
    import peft

    targets = config.lora_targets or default_lora_targets(module, backbone_name)
    _check_targets(module, targets, backbone_name)
    return peft.LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                           target_modules=targets, bias=config.lora_bias)


def _is_bitfit_parameter(name: str, module: nn.Module, norms: bool) -> bool:
    if name.endswith(".bias") or name == "bias":
        return True
    return norms and isinstance(module, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm))


def prepare_backbone(strategy: str, config: LoraConfig | BitFitConfig, module: nn.Module,
                     backbone_name: str = "the backbone") -> nn.Module:
    """Freeze the backbone except what the strategy trains; ``lora`` wraps it in a peft model."""
    if strategy == "lora":
        import peft

        lora = _peft_config(config, module, backbone_name)
        try:
            return peft.get_peft_model(module, lora)
        except ValueError as exc:  # e.g. a layer type peft's LoRA does not support
            raise ConfigError(f"peft cannot add LoRA adapters to {backbone_name}: {exc} Fix `--lora-targets`.") from exc
    if strategy == "bitfit":
        owners = dict(module.named_modules())
        for name, param in module.named_parameters():
            owner = owners[name.rsplit(".", 1)[0]] if "." in name else module
            param.requires_grad_(_is_bitfit_parameter(name, owner, config.bitfit_norms))
        if not any(p.requires_grad for p in module.parameters()):
            raise ConfigError(f"{backbone_name} has no biases or norm parameters for bitfit to train. "
                              "Use `--strategy lora` or `finetune`.")
        return module
    raise ConfigError(f"'{strategy}' is not a parameter-efficient strategy; choose one of {', '.join(PEFT_STRATEGIES)}.")


def trained_backbone_state(strategy: str, module: nn.Module) -> dict[str, torch.Tensor]:
    """The backbone tensors the strategy trained: peft's adapter state, or bitfit's biases."""
    if strategy == "lora":
        from peft import get_peft_model_state_dict

        return get_peft_model_state_dict(module)
    return {name: param for name, param in module.named_parameters() if param.requires_grad}


def restore_backbone(strategy: str, config: LoraConfig | BitFitConfig, module: nn.Module,
                     tensors: dict[str, torch.Tensor], backbone_name: str = "the backbone") -> nn.Module:
    """Re-apply saved trained tensors to a freshly built pre-trained backbone."""
    prepared = prepare_backbone(strategy, config, module, backbone_name)
    if strategy == "lora":
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(prepared, tensors)
        unexpected = list(result.unexpected_keys)
        missing = [k for k in result.missing_keys if ".lora_" in k]
    else:
        result = prepared.load_state_dict(tensors, strict=False)
        unexpected = list(result.unexpected_keys)
        missing = sorted(set(trained_backbone_state(strategy, prepared)) - set(tensors))
    if unexpected or missing:
        raise ConfigError(f"The saved {strategy} tensors do not fit {backbone_name}: "
                          f"{len(unexpected)} unexpected (e.g. {unexpected[:2]}), {len(missing)} missing "
                          f"(e.g. {missing[:2]}). The run was trained on another architecture or targets.")
    return prepared


def merge_backbone(strategy: str, module: nn.Module) -> nn.Module:
    """A plain backbone with the adapters folded into its weights (peft ``merge_and_unload``)."""
    if strategy == "lora":
        module = module.merge_and_unload()
    for param in module.parameters():
        param.requires_grad_(True)
    return module
