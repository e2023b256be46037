"""The backbone registry: names users type, mapped to builders and input contracts.

Registered names (``efficientnet_lite0``, ``minilm``) are pre-trained models whose weights
ship in pip packages. ``timm:<name>`` and ``hf:<id or folder>`` reach any timm or Hugging
Face model the machine has weights for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, did_you_mean
from .base import Backbone, BackboneEntry
from .efficientnet_lite import EFFICIENTNET_LITE_ENTRIES
from .text_encoders import MINILM_ENTRY, build_hf_backbone
from .timm_models import build_timm_backbone

__all__ = ["register_backbone", "build_backbone", "list_backbones", "BackboneInfo", "registered_names", "default_backbone",
           "DEFAULT_BACKBONES"]

# The packaged default of each modality: what `fit` uses when no `--model` is given.
DEFAULT_BACKBONES = {"image": "efficientnet_lite0", "text": "minilm"}

_REGISTRY: dict[str, BackboneEntry] = {}
_PREFIXES: dict[str, Callable[..., Backbone]] = {"timm": build_timm_backbone, "hf": build_hf_backbone}


def register_backbone(entry: BackboneEntry) -> BackboneEntry:
    """Add a backbone under ``entry.name`` (a name already taken is an error)."""
    if entry.name in _REGISTRY:
        raise ConfigError(f"A backbone named '{entry.name}' is already registered.")
    _REGISTRY[entry.name] = entry
    return entry


for _entry in (*EFFICIENTNET_LITE_ENTRIES, MINILM_ENTRY):
    register_backbone(_entry)


def default_backbone(modality: str) -> str:
    """The backbone used for a modality when none is named."""
    return DEFAULT_BACKBONES[modality]


def registered_names() -> list[str]:
    """Names of the registered (packaged) backbones."""
    return list(_REGISTRY)


def build_backbone(name: str, weights: str | Path | None = None, pretrained: bool = True) -> Backbone:
    """Build a backbone by registered name, ``timm:<name>`` or ``hf:<id or folder>``.

    ``weights`` is a local weights file that replaces the default source; ``pretrained=False``
    gives the same architecture with random weights (the from-scratch baseline).
    """
    prefix, _, rest = name.partition(":")
    if rest and prefix in _PREFIXES:
        return _PREFIXES[prefix](rest, weights=weights, pretrained=pretrained)
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ConfigError(
            f"Unknown backbone '{name}'.{did_you_mean(name, _REGISTRY)} Choose one of "
            f"{', '.join(_REGISTRY)}, or `timm:<model name>` / `hf:<model id or folder>`; "
            "`headstart models` lists them."
        )
    return entry.build(weights=weights, pretrained=pretrained)


@dataclass(frozen=True)
class BackboneInfo:
    """One row of ``headstart models``."""

    name: str
    modality: str
    feature_dim: int
    available: bool
    description: str
    contract: dict


def list_backbones(with_contract: bool = True) -> list[BackboneInfo]:
    """Every registered backbone, whether its weights are here, and its input contract.

    The contract is read from the architecture built with random weights, so listing
    needs no weights and stays fast.
    """
    rows = []
    for entry in _REGISTRY.values():
        contract = entry.build(pretrained=False).contract.to_dict() if with_contract else {}
        rows.append(BackboneInfo(entry.name, entry.modality, entry.feature_dim, entry.available(),
                                 entry.description, contract))
    return rows
