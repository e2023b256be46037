"""Pre-trained backbones and their input contracts.

The registry imports no torch (builders import it when they build), so listing backbones and
naming defaults is cheap; ``TextEncoder`` and ``load_state_dict_file`` are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports
from .base import Backbone, BackboneEntry
from .registry import (DEFAULT_BACKBONES, BackboneInfo, build_backbone, default_backbone, feature_identity,
                       list_backbones, register_backbone, register_prefix, registered_names)

_LAZY = {"TextEncoder": "text_encoders", "load_state_dict_file": "timm_models"}

__all__ = [
    "DEFAULT_BACKBONES",
    "default_backbone",
    "Backbone",
    "BackboneEntry",
    "BackboneInfo",
    "TextEncoder",
    "build_backbone",
    "feature_identity",
    "list_backbones",
    "load_state_dict_file",
    "register_backbone",
    "register_prefix",
    "registered_names",
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


if TYPE_CHECKING:  # for type checkers and IDEs
    from .text_encoders import TextEncoder
    from .timm_models import load_state_dict_file
