"""The backbone registry: names users type, mapped to builders and input contracts.

Registered names (``efficientnet_lite0``, ``minilm``) are pre-trained models whose weights
ship in pip packages. ``timm:<name>`` and ``hf:<id or folder>`` reach any timm or Hugging
Face model the machine has weights for. ``run:<run folder>`` is a fitted run's backbone: its
builder lives above this layer (``headstart.run_backbones``) and registers itself with
:func:`register_prefix`; the registry imports it, by name, the first time the prefix is used.
Nothing here imports torch: builders import it when they build, and the packaged backbones'
contracts are listed from ``catalog.py``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ..contract import InputContract
from ..errors import ConfigError, WeightsUnavailableError, did_you_mean
from .base import Backbone, BackboneEntry, feature_cache_key, file_digest
from .catalog import CATALOG
from .efficientnet_lite import EFFICIENTNET_LITE_ENTRIES
from .minilm import MINILM_ENTRY
from .sizing import check_image, resized, split_input_size

__all__ = ["register_backbone", "register_prefix", "build_backbone", "list_backbones", "BackboneInfo", "registered_names", "default_backbone",
           "DEFAULT_BACKBONES", "described", "feature_identity"]

# The packaged default of each modality: what `fit` uses when no `--model` is given.
DEFAULT_BACKBONES = {"image": "efficientnet_lite0", "text": "minilm"}

_REGISTRY: dict[str, BackboneEntry] = {}


def _timm_builder(spec: str, weights: str | Path | None = None, pretrained: bool = True) -> Backbone:
    from .timm_models import build_timm_backbone  # timm and torch: only when one is built

    return build_timm_backbone(spec, weights=weights, pretrained=pretrained)


def _hf_builder(spec: str, weights: str | Path | None = None, pretrained: bool = True) -> Backbone:
    from .text_encoders import build_hf_backbone  # transformers and torch: only when one is built

    return build_hf_backbone(spec, weights=weights, pretrained=pretrained)


_PREFIXES: dict[str, Callable[..., Backbone]] = {"timm": _timm_builder, "hf": _hf_builder}
# Prefixes whose builder lives in a higher layer: the module named here registers it when imported.
_PREFIX_MODULES = {"run": "headstart.run_backbones"}


def register_prefix(prefix: str, builder: Callable[..., Backbone]) -> None:
    """Make ``<prefix>:<spec>`` build through ``builder(spec, weights=..., pretrained=...)``."""
    if _PREFIXES.get(prefix, builder) is not builder:
        raise ConfigError(f"The backbone prefix '{prefix}:' is already registered.")
    _PREFIXES[prefix] = builder


def _prefix_builder(prefix: str) -> Callable[..., Backbone] | None:
    if prefix not in _PREFIXES and prefix in _PREFIX_MODULES:
        importlib.import_module(_PREFIX_MODULES[prefix])
    return _PREFIXES.get(prefix)


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
    """Build a backbone by registered name, ``timm:<name>``, ``hf:<id or folder>`` or ``run:<run folder>``,
    any of them with ``@<pixels>`` to feed an image backbone at that input size (``efficientnet_lite0@128``).

    ``weights`` is a local weights file that replaces the default source; ``pretrained=False``
    gives the same architecture with random weights (the from-scratch baseline).
    """
    base, size = split_input_size(name)
    if size is not None and base in CATALOG:  # a packaged text backbone is refused before it loads
        check_image(name, size, base, CATALOG[base]["contract"]["modality"])
    backbone = _build(base, weights, pretrained)
    return backbone if size is None else resized(backbone, size, name)


def _build(name: str, weights: str | Path | None, pretrained: bool) -> Backbone:
    prefix, _, rest = name.partition(":")
    builder = _prefix_builder(prefix) if rest else None
    if builder is not None:
        return builder(rest, weights=weights, pretrained=pretrained)
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ConfigError(
            f"Unknown backbone '{name}'.{did_you_mean(name, _REGISTRY)} Choose one of "
            f"{', '.join(_REGISTRY)}, or `timm:<model name>` / `hf:<model id or folder>` / `run:<run folder>`, "
            "with `@<pixels>` for another image input size; `headstart models` lists them."
        )
    return entry.build(weights=weights, pretrained=pretrained)


def feature_identity(name: str, weights: str | Path | None = None) -> tuple[str, InputContract] | None:
    """The feature-cache key and input contract that ``build_backbone(name, weights)`` gives, from the
    catalog record and the weight files' digest, without loading the network: what reading features
    from a warm cache needs. None where only building tells (``timm:``, ``hf:`` and ``run:`` names, a
    backbone registered without a catalog record or weight files) or where building would fail."""
    base, size = split_input_size(name)
    entry, record = _REGISTRY.get(base), CATALOG.get(base)
    if entry is None or record is None or entry.weight_files is None:
        return None
    contract = InputContract.from_dict(record["contract"])
    if size is not None:
        if contract.modality != "image":
            return None
        contract = replace(contract, input_size=size)
    try:
        files = entry.weight_files(weights)
        return (feature_cache_key(name, file_digest(files), contract), contract) if files else None
    except (OSError, WeightsUnavailableError):
        return None


@dataclass(frozen=True)
class BackboneInfo:
    """One row of ``headstart models``."""

    name: str
    modality: str
    feature_dim: int
    available: bool
    description: str
    contract: dict
    parameters: int | None = None  # the backbone's weights (its pre-training head aside)


def list_backbones(with_contract: bool = True) -> list[BackboneInfo]:
    """Every registered backbone, whether its weights are here, its input contract and size.

    The packaged backbones' contracts and sizes come from ``catalog.py``, without building
    anything (nor importing torch); another registered backbone's are read from its
    architecture built with random weights, so listing needs no weights.
    """
    rows = []
    for entry in _REGISTRY.values():
        known = CATALOG.get(entry.name) or (described(entry) if with_contract else {})
        rows.append(BackboneInfo(entry.name, entry.modality, entry.feature_dim, entry.available(),
                                 entry.description, known.get("contract", {}) if with_contract else {},
                                 known.get("parameters")))
    return rows


def described(entry: BackboneEntry) -> dict:
    """An entry's catalog record, from its architecture built with random weights (torch):
    what ``catalog.py`` holds for the packaged backbones."""
    built = entry.build(pretrained=False)
    return {"parameters": sum(p.numel() for p in built.module.parameters()), "contract": built.contract.to_dict()}
