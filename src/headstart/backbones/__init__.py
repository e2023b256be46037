"""Pre-trained backbones and their input contracts."""

from .base import Backbone, BackboneEntry
from .registry import (DEFAULT_BACKBONES, BackboneInfo, build_backbone, default_backbone, list_backbones,
                       register_backbone, register_prefix, registered_names)
from .text_encoders import TextEncoder
from .timm_models import load_state_dict_file

__all__ = [
    "DEFAULT_BACKBONES",
    "default_backbone",
    "Backbone",
    "BackboneEntry",
    "BackboneInfo",
    "TextEncoder",
    "build_backbone",
    "list_backbones",
    "load_state_dict_file",
    "register_backbone",
    "register_prefix",
    "registered_names",
]
