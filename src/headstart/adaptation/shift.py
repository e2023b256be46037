"""How far apart two domains are in a backbone's feature space, before training anything.

Proxy A-distance (Ben-David et al., 2007): train a classifier to tell source features from
target features; with its cross-validated (balanced) error e, PAD = 2 (1 - 2e). Two samples of
one domain give ~0 (the classifier guesses), disjoint domains give ~2 (it never errs). The
multi-kernel MMD of the same features is reported beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..backbones import build_backbone
from ..data import LabelledData
from ..errors import DataError
from .. import distributed
from ..features import extract_features, share_features
from .mmd import multi_kernel_mmd

__all__ = ["DomainShift", "domain_shift", "measure_shift"]


@dataclass(frozen=True)
class DomainShift:
    """The separability of two domains in feature space."""

    proxy_a_distance: float  # 0 (same domain) .. 2 (disjoint domains)
    domain_accuracy: float  # cross-validated balanced accuracy of the domain classifier
    mmd: float  # squared multi-kernel MMD (median-heuristic bandwidths)
    source_samples: int
    target_samples: int
    folds: int

    def verdict(self) -> str:
        """One sentence a user can act on."""
        if self.proxy_a_distance < 0.5:
            return "the domains overlap in feature space: a source-trained model should carry over; adaptation has little to fix"
        if self.proxy_a_distance < 1.5:
            return "the domains differ noticeably: expect some loss on the target; adaptation may recover part of it"
        return "the domains are almost fully separable: expect a large loss on the target; try adaptation"

    def to_dict(self) -> dict:
        return {**asdict(self), "verdict": self.verdict()}


def _sample(features: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    return features if len(features) <= limit else features[np.sort(rng.choice(len(features), limit, replace=False))]


def domain_shift(source: np.ndarray, target: np.ndarray, *, folds: int = 5, max_samples: int = 2000,
                 mmd_samples: int = 1000, seed: int = 0) -> DomainShift:
    """Proxy A-distance and MMD between source and target feature matrices.

    The domain classifier is a standardised logistic regression scored by ``folds``-fold
    cross-validation; balanced accuracy keeps unequal domain sizes from faking separability.
    At most ``max_samples`` per domain are used (``mmd_samples`` for the MMD), drawn with ``seed``.
    """
    for name, features in (("source", source), ("target", target)):
        if len(features) < folds:
            raise DataError(f"The {name} domain has {len(features)} samples; measuring the shift needs at least {folds}.")
    rng = np.random.default_rng(seed)
    source, target = _sample(np.asarray(source), max_samples, rng), _sample(np.asarray(target), max_samples, rng)
    x = np.concatenate([source, target])
    domains = np.r_[np.zeros(len(source), int), np.ones(len(target), int)]
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    splits = StratifiedKFold(folds, shuffle=True, random_state=seed)
    predicted = cross_val_predict(classifier, x, domains, cv=splits)
    accuracy = float(balanced_accuracy_score(domains, predicted))
    pad = float(np.clip(2.0 * (1.0 - 2.0 * (1.0 - accuracy)), 0.0, 2.0))
    with torch.no_grad():
        mmd = float(multi_kernel_mmd(torch.as_tensor(_sample(source, mmd_samples, rng), dtype=torch.float64),
                                     torch.as_tensor(_sample(target, mmd_samples, rng), dtype=torch.float64)))
    return DomainShift(pad, accuracy, mmd, len(source), len(target), folds)


def measure_shift(model: str, source: LabelledData, target: LabelledData, *, weights: str | Path | None = None,
                  cache_dir: str | Path | None = None, use_cache: bool = True, batch_size: int = 64,
                  num_workers: int = 1, device: str | torch.device = "cpu", seed: int = 0,
                  progress: Callable[[str, int, int], None] | None = None) -> DomainShift:
    """The shift between two data sets (labels ignored) in the features of backbone ``model``.

    Features come from the cache where possible, so measuring before fitting costs little.
    """
    if source.modality != target.modality:
        raise DataError(f"{source.source} holds {source.modality} data but {target.source} holds {target.modality}; "
                        "compare two domains of one modality.")
    backbone = build_backbone(model, weights=weights)
    device = distributed.join(torch.device(device))
    features = []
    for stage, data in (("source features", source), ("target features", target)):
        report = (lambda done, total, stage=stage: progress(stage, done, total)) if progress else None
        share_features(backbone, data, cache_dir=cache_dir, batch_size=batch_size, num_workers=num_workers,
                       device=device, progress=report)  # under a launcher: each rank a share, into the cache
        features.append(extract_features(backbone, data, cache_dir=cache_dir, use_cache=use_cache, batch_size=batch_size,
                                         num_workers=num_workers, device=device, progress=report))
    return domain_shift(*features, seed=seed)
