"""Image backbones built on timm: any timm architecture, with weights from a local file
or the user's Hugging Face cache (never downloaded at run time)."""

from __future__ import annotations

import logging
from pathlib import Path

import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from timm.models import group_parameters
from torch import nn

from ..contract import InputContract
from ..errors import ConfigError, WeightsUnavailableError, did_you_mean
from .base import Backbone, file_digest, layer_groups_from_names

__all__ = ["build_timm_backbone", "load_state_dict_file", "timm_contract"]

log = logging.getLogger(__name__)


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read weights from safetensors, or from a torch file with ``weights_only=True``.

    Checkpoints that wrap the weights (``{"state_dict": ...}`` or ``{"model": ...}``) are
    unwrapped. Plain pickles that need arbitrary code are refused by torch itself.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Weights file {path} does not exist.")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ConfigError(f"Cannot read weights from {path}: not a readable safetensors file ({exc}).") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError and friends
        raise ConfigError(
            f"Cannot read weights from {path}: {exc.__class__.__name__}. headstart reads "
            "safetensors files, or torch files that load with `weights_only=True`."
        ) from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path} does not hold a state dict of tensors.")
    return state


def _mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str:
    """How a state dict differs from a model's, in a few words (torch's message lists every key)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    shapes = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    parts = [f"{len(missing)} of its {len(expected)} tensors are missing (e.g. {missing[0]})" if missing else "",
             f"{len(shapes)} have another shape (e.g. {shapes[0]})" if shapes else "",
             f"{len(set(state) - set(expected))} are unknown to it" if set(state) - set(expected) else ""]
    return ", ".join(p for p in parts if p) or "they do not load"


def timm_contract(model: nn.Module) -> InputContract:
    """Read the input contract from a timm model's pretrained config and group matcher."""
    cfg = model.pretrained_cfg
    groups = group_parameters(model, model.group_matcher(coarse=True))
    named = {f"stage{index}" if index else "stem": names for index, names in groups.items()}
    mean, std = tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225)))
    convolutional = any(isinstance(m, nn.Conv2d) for m in model.modules())
    return InputContract(
        modality="image",
        feature_dim=int(model.num_features),
        layer_groups=layer_groups_from_names(named),
        input_size=int(cfg.get("input_size", (3, 224, 224))[-1]),
        crop_pct=float(cfg.get("crop_pct", 0.875)),
        interpolation=str(cfg.get("interpolation", "bicubic")),
        mean=mean,
        std=std,
        channels_last=convolutional,
    )


def _num_classes_in(state: dict[str, torch.Tensor], model: nn.Module) -> int:
    classifier = model.pretrained_cfg.get("classifier", "classifier")
    weight = state.get(f"{classifier}.weight")
    return int(weight.shape[0]) if weight is not None else 0


def _weights_from_hf_cache(model: nn.Module, spec: str) -> Path:
    """Find the model's weights in the local Hugging Face cache, or say how to provide them."""
    from huggingface_hub import try_to_load_from_cache

    hub_id = model.pretrained_cfg.get("hf_hub_id")
    if hub_id:
        for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
            found = try_to_load_from_cache(hub_id, filename)
            if isinstance(found, str):
                return Path(found)
    where = f"the Hugging Face cache has no '{hub_id}'" if hub_id else "timm names no weights for it"
    raise WeightsUnavailableError(
        f"No pre-trained weights for 'timm:{spec}' on this machine ({where}), and headstart "
        "never downloads at run time. Give a local file with `--weights PATH` (.safetensors "
        f"or .pth), or fetch them once on a connected machine (`hf download {hub_id or spec}`)."
    )


def build_timm_backbone(spec: str, weights: str | Path | None = None, pretrained: bool = True) -> Backbone:
    """Build ``timm:<spec>`` as a feature extractor with its source classifier kept aside.

    ``weights`` is a local file; without it the Hugging Face cache is searched. With
    ``pretrained=False`` the weights stay random (the training-from-scratch baseline).
    """
    arch = spec.split(".")[0]
    if not timm.is_model(arch):
        raise ConfigError(f"timm has no architecture '{arch}'.{did_you_mean(arch, timm.list_models())}")
    probe = timm.create_model(spec, pretrained=False)
    digest = "random"
    if pretrained:
        path = Path(weights) if weights else _weights_from_hf_cache(probe, spec)
        state = load_state_dict_file(path)
        model = timm.create_model(spec, pretrained=False, num_classes=_num_classes_in(state, probe))
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError:
            raise ConfigError(f"Weights in {path} do not fit timm:{spec}: {_mismatch(model, state)}; give the "
                              "weights of that architecture, or its name with `--model timm:NAME`.") from None
        digest = file_digest([path])
    else:
        model = probe
    return backbone_from_timm_model(f"timm:{spec}", model, digest)


def backbone_from_timm_model(name: str, model: nn.Module, digest: str) -> Backbone:
    """Split a timm classifier into a feature module and its source head."""
    source_head = None
    if model.num_classes:
        source_head = model.get_classifier()
        model.reset_classifier(0)
    model.eval()
    return Backbone(name=name, module=model, contract=timm_contract(model),
                    weights_digest=digest, source_head=source_head)
