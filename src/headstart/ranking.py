"""Ranking backbones (and their layers) for a data set, from features alone.

Fine-tuning every candidate to find the best one costs hours; transferability scores on
cached features answer "which backbone, which layer?" in seconds. What costs is embedding the
data once per candidate, so a large data set is ranked on a stratified sample of it
(``DEFAULT_SAMPLE``, at least ``PER_CLASS`` of each class; ``bench/rank_sample.py`` measured
where LogME's ranking settles).
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
from .data import LabelledData, stratified_sample
from .errors import ConfigError
from . import distributed
from .features import extract_features, share_features
from .transferability import score_features

__all__ = ["RankRow", "rank", "default_candidates", "sample_for_ranking", "DEFAULT_SAMPLE", "PER_CLASS", "ALL",
           "AUTO"]

Progress = Callable[[str, int, int], None]
Sample = int | str | None

ALL, AUTO = "all", "auto"  # rank on every sample; on the default sample
DEFAULT_SAMPLE, PER_CLASS = 1000, 50  # the default sample: 1,000 samples, 50 per class if that is more (bench/rank_sample.py)


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
    samples: int  # how many samples were scored: all of the data, or a stratified sample of it

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


def sample_for_ranking(data: LabelledData, sample: Sample = AUTO, seed: int = 0) -> LabelledData:
    """What a ranking scores: ``data`` itself when ``sample`` is ``"all"`` (or None) or at least its
    size, else a stratified sample of ``sample`` of it (each class keeps its share, at least one of
    each), the same for the same data and ``seed``. ``"auto"``: ``DEFAULT_SAMPLE`` samples, or
    ``PER_CLASS`` times the number of classes where that is more."""
    if sample is None or sample == ALL:
        return data
    if sample == AUTO:
        sample = max(DEFAULT_SAMPLE, PER_CLASS * len(data.classes))
    if isinstance(sample, bool) or not isinstance(sample, (int, np.integer)) or sample < 1:
        raise ConfigError(f"The 'sample' option of rank must be an int >= 1, '{AUTO}' or '{ALL}'. "
                          f"Got {sample!r} instead.")
    return data if sample >= len(data) else data.subset(stratified_sample(data.y, int(sample), seed))


def rank(models: Sequence[str | Backbone], data: LabelledData, *, layers: bool = False, cache_dir: str | Path | None = None,
         use_cache: bool = True, batch_size: int = 64, num_workers: int = 1, device: str = "cpu",
         progress: Progress | None = None, sample: Sample = AUTO, seed: int = 0) -> list[RankRow]:
    """Score each candidate on ``data`` and return the rows, best LogME first.

    Candidates are backbone names (as ``build_backbone`` takes them) or built backbones.
    With ``layers``, each backbone contributes its last few layer groups besides its final
    features (all from one forward pass), so an earlier layer can win on a distant domain.
    Data larger than ``sample`` is scored on a stratified sample of that many (seeded by
    ``seed``; each row's ``samples`` says how many); the default, ``"auto"``, is 1,000 samples
    (``DEFAULT_SAMPLE``), or 50 per class (``PER_CLASS``) where that is more; ``"all"`` scores
    every sample.
    Features are cached per sample, so a later ranking on all of it embeds only the rest.
    """
    if not models:
        raise ConfigError("Give at least one candidate model to rank.")
    data = sample_for_ranking(data, sample, seed)
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
                                feature_seconds=round(feature_seconds, 3), samples=len(data)))
    return sorted(rows, key=lambda row: -row.logme)
