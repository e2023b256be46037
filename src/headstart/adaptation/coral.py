"""CORAL: align the second-order statistics of source features to the target's.

Sun, Feng and Saenko, "Return of Frustratingly Easy Domain Adaptation" (AAAI 2016): whiten the
source features with their own covariance, re-colour them with the target's, and fit the
classifier on the result. The target's own features then go through that classifier unchanged,
so an adapted model is an ordinary head on frozen features: seconds on cached features.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConfigError
from .base import AdaptationMethod, register_adaptation
from .configs import CoralConfig

if TYPE_CHECKING:
    from ..strategies.base import FitJob

__all__ = ["Coral", "CoralConfig", "CoralAlignment"]


def _matrix_power(covariance: np.ndarray, power: float) -> np.ndarray:
    values, vectors = np.linalg.eigh(covariance)
    values = np.clip(values, 1e-12, None)
    return (vectors * values ** power) @ vectors.T


class CoralAlignment:
    """A linear map taking source features to the target's mean and covariance.

    ``fit(source, target)`` learns it; ``transform(x)`` applies it to source-domain features.
    """

    def __init__(self, regularisation: float = 1.0, align_mean: bool = True) -> None:
        self.regularisation = regularisation
        self.align_mean = align_mean
        self.matrix_: np.ndarray | None = None  # set by fit

    def fit(self, source: np.ndarray, target: np.ndarray) -> CoralAlignment:
        source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
        if source.ndim != 2 or target.ndim != 2 or source.shape[1] != target.shape[1]:
            raise ConfigError(f"CORAL needs two feature matrices of the same width. Got {source.shape} and {target.shape}.")
        if len(source) < 2 or len(target) < 2:
            raise ConfigError("CORAL needs at least 2 source and 2 target samples to estimate covariances.")
        self.source_mean_, self.target_mean_ = source.mean(0), target.mean(0)
        source_cov, target_cov = np.cov(source, rowvar=False), np.cov(target, rowvar=False)
        ridge = self.regularisation * 0.5 * (np.trace(source_cov) + np.trace(target_cov)) / source.shape[1]
        eye = np.eye(source.shape[1])
        self.matrix_ = _matrix_power(source_cov + ridge * eye, -0.5) @ _matrix_power(target_cov + ridge * eye, 0.5)
        return self

    def transform(self, features: np.ndarray) -> np.ndarray:
        if self.matrix_ is None:
            raise ConfigError("This CoralAlignment is not fitted yet. Call `fit(source, target)` first.")
        centred = np.asarray(features, np.float64) - self.source_mean_
        shift = self.target_mean_ if self.align_mean else self.source_mean_
        return (centred @ self.matrix_ + shift).astype(np.float32)


@register_adaptation
class Coral(AdaptationMethod):
    """A probe's head is fit on train features re-coloured to the target's covariance; the
    target's own features then go through it unchanged."""

    name = "coral"
    config_class = CoralConfig
    strategies = ("linear-probe",)

    def head_features(self, job: FitJob) -> tuple[np.ndarray, np.ndarray]:
        x_train, x_val = super().head_features(job)
        alignment = CoralAlignment(self.config.regularisation, self.config.align_mean)
        alignment.fit(x_train, job.features(job.target, "target features"))
        return alignment.transform(x_train), alignment.transform(x_val)
