"""The input contract of a backbone: what its inputs must look like.

A contract is plain data (no torch modules), so the data side can build transforms and
tokenizers from it without knowing about models, and a run directory can store it as JSON.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["DEFAULT_MAX_PIXELS", "InputContract", "LayerGroup"]

# The largest image accepted unless told otherwise, in pixels (a bundle's contract.json records it):
# PIL's own warning threshold, a 0.27 GB RGB image (about 9500 x 9500), far above any photo a
# backbone needs, far below the 12000 x 12000 JPEGs that took 2 GB each to decode.
DEFAULT_MAX_PIXELS: int = 89_478_485

Modality = Literal["image", "text"]


@dataclass(frozen=True)
class LayerGroup:
    """A named group of backbone parameters, matched by regular expressions on their names."""

    name: str
    patterns: tuple[str, ...]


@dataclass(frozen=True)
class InputContract:
    """Everything needed to feed a backbone correctly and to reason about its layers.

    Image fields are None for text backbones and text fields are None for image backbones.
    ``layer_groups`` are ordered from input to output; freezing and layer-wise learning
    rates use them.
    """

    modality: Modality
    feature_dim: int
    layer_groups: tuple[LayerGroup, ...] = ()
    # images
    input_size: int | None = None
    crop_pct: float | None = None
    interpolation: str | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    channels_last: bool = False
    # text
    tokenizer: str | None = None
    max_length: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dictionary (the form stored in ``contract.json``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> InputContract:
        """Rebuild a contract from :meth:`to_dict` output."""
        raw = dict(raw)
        raw["layer_groups"] = tuple(
            LayerGroup(g["name"], tuple(g["patterns"])) for g in raw.get("layer_groups", ())
        )
        for key in ("mean", "std"):
            if raw.get(key) is not None:
                raw[key] = tuple(raw[key])
        return cls(**raw)

    def digest(self) -> str:
        """A short stable hash of the preprocessing-relevant fields, for cache keys."""
        keys = ("modality", "input_size", "crop_pct", "interpolation", "mean", "std",
                "tokenizer", "max_length")
        payload = json.dumps({k: getattr(self, k) for k in keys}, sort_keys=True, default=list)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]
