"""Ranking backbones (and their layers) for a data set, from features alone.

Fine-tuning every candidate to find the best one costs hours; transferability scores on
cached features answer "which backbone, which layer?" in seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .backbones import Backbone, build_backbone, list_backbones
from .backbones.layers import FINAL, layer_candidates, tap_layers
from .data import LabelledData
from .errors import ConfigError
from . import distributed
from .features import extract_features, share_features
from .transferability import score_features

__all__ = ["RankRow", "rank", "default_candidates"]

Progress = Callable[[str, int, int], None]


@dataclass
class RankRow:
    """The scores of one candidate (a backbone, or one layer of it)."""

    model: str
    layer: str
    logme: float
    leep: float | None
    nce: float | None
    hscore: float
    knn_accuracy: float
    seconds: float
    feature_dim: int
    feature_seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def default_candidates(modality: str) -> list[str]:
    """Every registered backbone of the modality whose weights are on this machine."""
    names = [row.name for row in list_backbones(with_contract=False)
             if row.modality == modality and row.available]
    if not names:
        raise ConfigError(f"No {modality} backbone has its weights on this machine; `headstart models` shows why.")
    return names


def _source_probabilities(backbone, features: np.ndarray) -> np.ndarray | None:
    if backbone.source_head is None:
        return None
    with torch.inference_mode():
        logits = backbone.source_head(torch.as_tensor(features))
    return torch.softmax(logits.double(), dim=1).numpy()


def rank(models: Sequence[str | Backbone], data: LabelledData, *, layers: bool = False, cache_dir: str | Path | None = None,
         use_cache: bool = True, batch_size: int = 64, num_workers: int = 1, device: str = "cpu",
         progress: Progress | None = None) -> list[RankRow]:
    """Score each candidate on ``data`` and return the rows, best LogME first.

    Candidates are backbone names (as ``build_backbone`` takes them) or built backbones.
    With ``layers``, each backbone contributes its last few layer groups besides its final
    features (all from one forward pass), so an earlier layer can win on a distant domain.
    """
    if not models:
        raise ConfigError("Give at least one candidate model to rank.")
    y = data.y
    device = distributed.join(torch.device(device))
    rows: list[RankRow] = []
    for candidate in models:
        backbone = candidate if isinstance(candidate, Backbone) else build_backbone(candidate)
        name = backbone.name
        tapped, columns = (tap_layers(backbone, layer_candidates(backbone)) if layers
                           else (backbone, [(FINAL, slice(None))]))
        start = time.perf_counter()
        report = (lambda done, total, n=name: progress(f"features {n}", done, total)) if progress else None
        share_features(tapped, data, cache_dir=cache_dir, batch_size=batch_size, num_workers=num_workers,
                       device=device, progress=report)  # under a launcher: each rank a share, into the cache
        features = extract_features(tapped, data, cache_dir=cache_dir, use_cache=use_cache, batch_size=batch_size,
                                    num_workers=num_workers, device=device, progress=report)
        feature_seconds = time.perf_counter() - start
        for layer, cols in columns:
            part = features[:, cols]
            started = time.perf_counter()
            source = _source_probabilities(backbone, part) if layer == FINAL else None
            scores = score_features(part, y, source_probabilities=source)
            rows.append(RankRow(model=name, layer=layer, logme=scores.logme, leep=scores.leep, nce=scores.nce,
                                hscore=scores.hscore, knn_accuracy=scores.knn_accuracy,
                                seconds=round(time.perf_counter() - started, 4), feature_dim=part.shape[1],
                                feature_seconds=round(feature_seconds, 3)))
    return sorted(rows, key=lambda row: -row.logme)
