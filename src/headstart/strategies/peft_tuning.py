"""Parameter-efficient transfer: ``lora`` (Hugging Face ``peft``) and ``bitfit``.

Both train through the same loop as ``finetune``; they differ only in which backbone
weights train. ``lora`` freezes the backbone and adds low-rank adapters to chosen layers
(Hu et al., ICLR 2022); ``bitfit`` trains only the backbone's biases, and optionally its
norm scales (Ben Zaken et al., ACL 2022). The new head always trains. A run stores only
what trained (adapter or biases, and the head); the frozen rest is rebuilt from the
pre-trained backbone, whose weights digest the run records.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .base import FitJob, register_strategy
from ..training import TransferNet
from .configs import BitFitConfig, LoraConfig
from .network import NetworkPlan, NetworkStrategy

__all__ = ["LoraConfig", "BitFitConfig", "ParameterEfficient", "Lora", "BitFit", "default_lora_targets"]

# Default LoRA targets, first set whose names exist wins: attention query/value projections of
# BERT-like encoders (BERT, RoBERTa, MiniLM), of other HF encoders (q_proj/v_proj, DistilBERT's
# q_lin/v_lin), the fused qkv of timm ViTs, and the pointwise convolutions of EfficientNet/MobileNet.
DEFAULT_TARGETS = (("query", "value"), ("q_proj", "v_proj"), ("q_lin", "v_lin"), ("qkv",), ("conv_pw", "conv_pwl"))
_LORA_LAYERS = (nn.Linear, nn.Conv2d, nn.Conv1d, nn.Embedding)
# Version 0.1 derived these configs from finetune's and recorded these fields, always at these values.
_RETIRED = {"unfreeze": "all", "gradual": 0, "layer_decay": 1.0, "l2sp": 0.0, "lpft_lr_scale": 0.1, "train_bn": False}


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


class ParameterEfficient(NetworkStrategy):
    """A frozen pre-trained base plus a few trained tensors; a run stores only those and the head."""

    retired_fields = _RETIRED

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.merged_ = False

    # what subclasses define -------------------------------------------------------------------
    def prepare(self, module: nn.Module, backbone_name: str) -> nn.Module:
        """Freeze the backbone except what the strategy trains (or wrap it)."""
        raise NotImplementedError

    def trained_state(self, module: nn.Module) -> dict[str, torch.Tensor]:
        return {name: param for name, param in module.named_parameters() if param.requires_grad}

    def load_trained(self, prepared: nn.Module, tensors: dict[str, torch.Tensor]) -> tuple[list, list]:
        """Load saved trained tensors into a prepared base; return (unexpected, missing) keys."""
        result = prepared.load_state_dict(tensors, strict=False)
        return list(result.unexpected_keys), sorted(set(self.trained_state(prepared)) - set(tensors))

    def merged_module(self, module: nn.Module) -> nn.Module:
        return module

    # the strategy -----------------------------------------------------------------------------
    def plan(self, job: FitJob) -> NetworkPlan:
        return NetworkPlan(self.new_head(job), lr=self.config.lr, head_lr_scale=self.config.head_lr_scale,
                           prepare=lambda module: self.prepare(module, job.backbone.name))

    @property
    def adapter(self) -> bool:
        """Whether the network is a frozen base plus trained parts (not merged)."""
        return not self.merged_

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.net_.parameters() if p.requires_grad)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        if not self.adapter:
            return super().state_tensors()
        trained = self.trained_state(self.net_.backbone)
        return {**{f"backbone.{k}": v for k, v in trained.items()},
                **{f"head.{k}": v for k, v in self.net_.head.state_dict().items()}}

    def run_entries(self) -> dict:
        return {"checkpoint": "adapter" if self.adapter else "merged"}

    @classmethod
    def needs_pretrained_base(cls, run_config: dict, tensor_names) -> bool:
        return run_config.get("checkpoint") == "adapter"

    def restore(self, backbone, n_classes: int, tensors: dict[str, torch.Tensor], run_config: dict) -> None:
        if not self.needs_pretrained_base(run_config, list(tensors)):  # merged: every weight is in the run
            super().restore(backbone, n_classes, tensors, run_config)
            self.merged_ = True
            return
        prepared = self.prepare(backbone.module, backbone.name)
        unexpected, missing = self.load_trained(prepared, {k.removeprefix("backbone."): v for k, v in tensors.items()
                                                           if k.startswith("backbone.")})
        if unexpected or missing:
            raise ConfigError(f"The saved {self.name} tensors do not fit {backbone.name}: "
                              f"{len(unexpected)} unexpected (e.g. {unexpected[:2]}), {len(missing)} missing "
                              f"(e.g. {missing[:2]}). The run was trained on another architecture or targets.")
        self.net_ = TransferNet(prepared, nn.Linear(backbone.contract.feature_dim, n_classes), self.config.dropout)
        self.net_.head.load_state_dict({k.removeprefix("head."): v for k, v in tensors.items()
                                        if k.startswith("head.")}, strict=True)
        self.as_trained(backbone)
        self.merged_ = False

    def merge(self) -> None:
        """Fold the adapter (or the biases) into a plain backbone, for deployment: the model then
        predicts the same and saves every weight, like a fine-tuned run."""
        if not self.adapter:
            raise ConfigError(f"This {self.name} run is merged already.")
        self.net_.backbone = self.merged_module(self.net_.backbone)
        for param in self.net_.backbone.parameters():
            param.requires_grad_(True)
        self.merged_ = True


@register_strategy
class Lora(ParameterEfficient):
    """Low-rank adapters on chosen layers of a frozen backbone (Hu et al., ICLR 2022), via peft."""

    name = "lora"
    config_class = LoraConfig

    def prepare(self, module: nn.Module, backbone_name: str) -> nn.Module:
        import peft

        lora = _peft_config(self.config, module, backbone_name)
        try:
            return peft.get_peft_model(module, lora)
        except ValueError as exc:  # e.g. a layer type peft's LoRA does not support
            raise ConfigError(f"peft cannot add LoRA adapters to {backbone_name}: {exc} Fix `--lora-targets`.") from exc

    def trained_state(self, module: nn.Module) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        return get_peft_model_state_dict(module)

    def load_trained(self, prepared: nn.Module, tensors: dict[str, torch.Tensor]) -> tuple[list, list]:
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(prepared, tensors)
        return list(result.unexpected_keys), [k for k in result.missing_keys if ".lora_" in k]

    def merged_module(self, module: nn.Module) -> nn.Module:
        return module.merge_and_unload()


@register_strategy
class BitFit(ParameterEfficient):
    """Only the backbone's biases (and optionally norm scales) train (Ben Zaken et al., ACL 2022)."""

    name = "bitfit"
    config_class = BitFitConfig

    def prepare(self, module: nn.Module, backbone_name: str) -> nn.Module:
        owners = dict(module.named_modules())
        for name, param in module.named_parameters():
            owner = owners[name.rsplit(".", 1)[0]] if "." in name else module
            param.requires_grad_(_is_bitfit_parameter(name, owner, self.config.bitfit_norms))
        if not any(p.requires_grad for p in module.parameters()):
            raise ConfigError(f"{backbone_name} has no biases or norm parameters for bitfit to train. "
                              "Use `--strategy lora` or `finetune`.")
        return module
