"""Transferability scores: exact on hand-worked cases, faithful to the papers, stable on odd data."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import minimize

from headstart.errors import ConfigError, DataError
from headstart.transferability import (
    TransferabilityScores,
    hscore,
    knn_accuracy,
    leep,
    logme,
    nce,
    score_features,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from logme_reference import logme_naive  # noqa: E402  (the plain version bench/ times against)


# --------------------------------------------------------------------------- helpers


def logme_evidence(f: np.ndarray, target: np.ndarray, log_alpha: float, log_beta: float) -> float:
    """L(alpha, beta) / N of the paper, straight from A with np.linalg."""
    n, d = f.shape
    alpha, beta = math.exp(log_alpha), math.exp(log_beta)
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ target)
    return float(n / 2 * log_beta + d / 2 * log_alpha - n / 2 * math.log(2 * math.pi)
                 - beta / 2 * np.sum((f @ m - target) ** 2) - alpha / 2 * m @ m
                 - np.linalg.slogdet(a)[1] / 2) / n


def logme_reference_slow(features: np.ndarray, y: np.ndarray) -> float:
    """Maximise the evidence over (log alpha, log beta) with Nelder-Mead from several starts."""
    f = np.asarray(features, dtype=np.float64)
    per_class = []
    for c in np.unique(y):
        target = (y == c).astype(np.float64)
        best = -np.inf
        for start in [(0.0, 0.0), (-3.0, 3.0), (3.0, -1.0), (2.0, 2.0)]:
            result = minimize(lambda p: -logme_evidence(f, target, p[0], p[1]), start, method="Nelder-Mead",
                              options={"xatol": 1e-10, "fatol": 1e-13, "maxiter": 20000})
            best = max(best, -result.fun)
        per_class.append(best)
    return float(np.mean(per_class))


def low_rank_features(n: int, d: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels driven by a 4-D latent, embedded in d dimensions with noise: an interior evidence optimum."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    latent = rng.standard_normal((classes, 4))[y] * 1.5 + rng.standard_normal((n, 4))
    features = latent @ rng.standard_normal((4, d)) + 0.3 * rng.standard_normal((n, d))
    return features.astype(np.float32), y


def class_features(n: int, d: int, classes: int, strength: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class mean * strength + unit noise: strength 0 carries no label information."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    features = rng.standard_normal((classes, d))[y] * strength + rng.standard_normal((n, d))
    return features.astype(np.float32), y


def source_softmax(y: np.ndarray, source_classes: int, signal: float, seed: int = 0) -> np.ndarray:
    """Softmax of logits that favour source class (2 y) mod Z by ``signal``, plus noise."""
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((y.size, source_classes))
    logits[np.arange(y.size), (2 * y) % source_classes] += signal
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def all_scores(features: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return {"logme": logme(features, y), "hscore": hscore(features, y), "knn_accuracy": knn_accuracy(features, y)}


# --------------------------------------------------------------------------- LogME is the paper's LogME


@pytest.mark.parametrize(("n", "d"), [(60, 8), (24, 40)], ids=["N>D", "N<D"])
def test_logme_equals_the_evidence_maximised_by_scipy(n: int, d: int) -> None:
    features, y = low_rank_features(n, d, classes=3)
    assert logme(features, y) == pytest.approx(logme_reference_slow(features, y), abs=1e-4)


@pytest.mark.parametrize(("n", "d", "classes"), [(60, 8, 3), (24, 40, 3), (200, 30, 5), (40, 40, 4)])
def test_logme_equals_the_naive_version_that_inverts_A_every_iteration(n: int, d: int, classes: int) -> None:
    features, y = class_features(n, d, classes, strength=1.0, seed=n + d)
    assert logme(features, y) == pytest.approx(logme_naive(features, y), abs=1e-6)


def test_logme_does_not_change_when_features_are_rescaled() -> None:
    features, y = class_features(120, 10, 3, strength=1.0)
    assert logme(features * 1000.0, y) == pytest.approx(logme(features, y), abs=1e-6)
    assert logme(features * 1e-3, y) == pytest.approx(logme(features, y), abs=1e-6)


# --------------------------------------------------------------------------- hand-worked values


def test_leep_matches_the_hand_computed_value() -> None:
    theta = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    y = np.array([0, 0, 1, 0])
    # P(y, z) = (1/4) sum_i theta_iz [y_i = y]:  P(0,0) = 2.1/4, P(0,1) = 0.9/4, P(1,0) = 0.3/4, P(1,1) = 0.7/4
    # P(z=0) = 2.4/4, P(z=1) = 1.6/4, so P(0|0) = 2.1/2.4, P(0|1) = 0.9/1.6, P(1|0) = 0.3/2.4, P(1|1) = 0.7/1.6
    expected = (math.log(0.9 * 2.1 / 2.4 + 0.1 * 0.9 / 1.6)
                + math.log(0.8 * 2.1 / 2.4 + 0.2 * 0.9 / 1.6)
                + math.log(0.3 * 0.3 / 2.4 + 0.7 * 0.7 / 1.6)
                + math.log(0.4 * 2.1 / 2.4 + 0.6 * 0.9 / 1.6)) / 4
    assert leep(theta, y) == pytest.approx(expected, abs=1e-12)


def test_nce_matches_the_hand_computed_value_from_labels_or_probabilities() -> None:
    z = np.array([0, 0, 1, 1, 1])
    y = np.array([0, 0, 0, 1, 1])
    # P(y,z): (0,0) = 2/5, (0,1) = 1/5, (1,1) = 2/5;  P(z=0) = 2/5, P(z=1) = 3/5
    expected = 2 / 5 * math.log((2 / 5) / (2 / 5)) + 1 / 5 * math.log((1 / 5) / (3 / 5)) \
        + 2 / 5 * math.log((2 / 5) / (3 / 5))
    assert nce(z, y) == pytest.approx(expected, abs=1e-12)
    probabilities = np.array([[0.7, 0.3], [0.6, 0.4], [0.2, 0.8], [0.4, 0.6], [0.1, 0.9]])
    assert nce(probabilities, y) == pytest.approx(expected, abs=1e-12)


def test_nce_is_zero_when_source_predictions_determine_the_label() -> None:
    assert nce(np.array([3, 3, 7, 7, 5]), np.array([0, 0, 1, 1, 1])) == pytest.approx(0.0, abs=1e-15)


def test_hscore_matches_the_hand_computed_value_on_either_side_of_n_equals_d() -> None:
    f = np.array([1.0, 3.0, 5.0, 7.0])
    y = np.array([0, 0, 1, 1])
    # centred f = [-3, -1, 1, 3]: var = (9 + 1 + 1 + 9) / 4 = 5; class means -2, 2: cov(E[f|y]) = (4 + 4) / 2 = 4
    expected = 4 / 5
    assert hscore(f[:, None], y) == pytest.approx(expected, abs=1e-12)
    with_constant = np.column_stack([f, np.full(4, 7.0)])  # N > D; the constant column adds nothing
    assert hscore(with_constant, y) == pytest.approx(expected, abs=1e-12)
    wide = np.column_stack([f, np.full((4, 5), 7.0), 2 * f])  # N < D: the other code path
    assert hscore(wide, y) == pytest.approx(expected, abs=1e-12)


def test_knn_accuracy_is_one_on_well_separated_clusters() -> None:
    features, y = class_features(90, 8, 3, strength=10.0)
    assert knn_accuracy(features, y, k=5) == 1.0


# --------------------------------------------------------------------------- scores track transferability


def test_every_feature_score_rises_when_labels_become_separable() -> None:
    noise = all_scores(*class_features(300, 32, 5, strength=0.0))
    separable = all_scores(*class_features(300, 32, 5, strength=3.0))
    for name in noise:
        assert separable[name] > noise[name], name


def test_every_feature_score_falls_when_labels_are_shuffled() -> None:
    features, y = class_features(300, 32, 5, strength=3.0)
    shuffled = np.random.default_rng(1).permutation(y)
    true, wrong = all_scores(features, y), all_scores(features, shuffled)
    for name in true:
        assert wrong[name] < true[name], name


def test_leep_and_nce_fall_when_source_predictions_stop_tracking_the_labels() -> None:
    y = np.arange(400) % 4
    probabilities = source_softmax(y, source_classes=10, signal=4.0)
    shuffled = np.random.default_rng(2).permutation(probabilities)
    assert leep(shuffled, y) < leep(probabilities, y)
    assert nce(shuffled, y) < nce(probabilities, y)


# --------------------------------------------------------------------------- numerical stability


def test_constant_and_zero_feature_columns_keep_every_score_finite() -> None:
    features, y = class_features(100, 6, 3, strength=1.0)
    odd = np.column_stack([features, np.zeros((100, 3)), np.full((100, 2), 5.0), features[:, :2]])
    scores = score_features(odd, y, source_probabilities=source_softmax(y, 5, 2.0))
    for name in ("logme", "leep", "nce", "hscore", "knn_accuracy"):
        assert math.isfinite(getattr(scores, name)), name
    assert scores.hscore == pytest.approx(hscore(features, y), rel=1e-6)  # copies and constants add nothing


@pytest.mark.parametrize("d", [5, 50], ids=["N>D", "N<D"])
def test_features_without_any_signal_give_finite_floor_scores(d: int) -> None:
    y = np.arange(30) % 3
    for features in (np.zeros((30, d)), np.full((30, d), 3.0)):
        scores = all_scores(features, y)
        assert math.isfinite(scores["logme"])
        assert scores["hscore"] == 0.0
        assert scores["knn_accuracy"] == pytest.approx(1 / 3)


def test_duplicated_samples_keep_scores_finite() -> None:
    features, y = class_features(60, 8, 3, strength=1.0)
    doubled, y2 = np.concatenate([features, features]), np.concatenate([y, y])
    for value in all_scores(doubled, y2).values():
        assert math.isfinite(value)


@pytest.mark.parametrize(("n", "d"), [(20, 500), (3000, 16)], ids=["N<<D", "N>>D"])
def test_scores_are_finite_far_from_n_equals_d(n: int, d: int) -> None:
    features, y = class_features(n, d, 4, strength=1.0)
    for value in all_scores(features, y).values():
        assert math.isfinite(value)


def test_logme_matches_naive_when_n_is_much_smaller_than_d() -> None:
    features, y = low_rank_features(16, 60, 2)
    assert logme(features, y) == pytest.approx(logme_naive(features, y), abs=1e-6)


def test_a_thousand_classes_of_two_samples_keep_logme_and_hscore_finite() -> None:
    features, y = class_features(2000, 64, 1000, strength=1.0)
    assert math.isfinite(logme(features, y))
    assert math.isfinite(hscore(features, y))


def test_float32_and_float64_inputs_give_the_same_scores() -> None:
    features, y = class_features(200, 20, 4, strength=1.0)
    single, double = all_scores(features, y), all_scores(features.astype(np.float64), y)
    for name in single:
        assert single[name] == pytest.approx(double[name], abs=1e-9), name


def test_scores_are_deterministic() -> None:
    features, y = class_features(150, 12, 3, strength=1.0)
    probabilities = source_softmax(y, 6, 1.0)
    first = score_features(features, y, source_probabilities=probabilities)
    second = score_features(features, y, source_probabilities=probabilities)
    for name in ("logme", "leep", "nce", "hscore", "knn_accuracy"):
        assert getattr(first, name) == getattr(second, name), name


def test_knn_accuracy_reduces_folds_for_small_classes() -> None:
    features, y = class_features(9, 4, 3, strength=5.0)  # 3 samples per class < 5 folds
    assert 0.0 <= knn_accuracy(features, y) <= 1.0


# --------------------------------------------------------------------------- score_features


def test_score_features_computes_and_times_every_score() -> None:
    features, y = class_features(120, 10, 3, strength=2.0)
    probabilities = source_softmax(y, 8, 3.0)
    scores = score_features(features, y, source_probabilities=probabilities)
    assert isinstance(scores, TransferabilityScores)
    assert scores.logme == pytest.approx(logme(features, y))
    assert scores.leep == pytest.approx(leep(probabilities, y))
    assert scores.nce == pytest.approx(nce(probabilities, y))
    assert scores.hscore == pytest.approx(hscore(features, y))
    assert scores.knn_accuracy == pytest.approx(knn_accuracy(features, y))
    assert set(scores.seconds) == {"logme", "leep", "nce", "hscore", "knn_accuracy"}
    assert all(seconds >= 0 for seconds in scores.seconds.values())


def test_score_features_leaves_leep_and_nce_empty_without_source_probabilities() -> None:
    features, y = class_features(60, 5, 3, strength=2.0)
    scores = score_features(features, y)
    assert scores.leep is None and scores.nce is None
    assert set(scores.seconds) == {"logme", "hscore", "knn_accuracy"}


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("score", [logme, hscore, knn_accuracy, score_features])
def test_one_dimensional_features_are_rejected(score) -> None:
    with pytest.raises(DataError, match="2-D"):
        score(np.ones(10), np.arange(10) % 2)


@pytest.mark.parametrize("score", [logme, hscore, knn_accuracy, score_features])
def test_nan_features_are_rejected(score) -> None:
    features = np.ones((10, 3))
    features[4, 1] = np.nan
    with pytest.raises(DataError, match="finite"):
        score(features, np.arange(10) % 2)


@pytest.mark.parametrize("score", [logme, hscore, knn_accuracy, score_features])
def test_labels_of_another_length_are_rejected(score) -> None:
    with pytest.raises(DataError, match="expected 10 labels, got 9"):
        score(np.ones((10, 3)), np.arange(9) % 2)


def test_leep_rejects_negative_probabilities() -> None:
    with pytest.raises(DataError, match="non-negative"):
        leep(np.array([[2.0, -1.0], [0.5, 0.5]]), np.array([0, 1]))


@pytest.mark.parametrize("score", [logme, hscore, knn_accuracy, score_features])
def test_a_single_class_is_rejected(score) -> None:
    with pytest.raises(DataError, match="at least 2 classes"):
        score(np.random.default_rng(0).standard_normal((10, 3)), np.zeros(10, dtype=int))


def test_non_integer_labels_are_rejected() -> None:
    with pytest.raises(DataError, match="integer"):
        logme(np.ones((4, 2)), np.array([0.5, 1.0, 0.0, 1.0]))


def test_knn_accuracy_rejects_a_class_with_one_sample() -> None:
    features, _ = class_features(7, 3, 2, strength=1.0)
    with pytest.raises(DataError, match="at least 2 samples per class"):
        knn_accuracy(features, np.array([0, 0, 0, 1, 1, 1, 2]))


@pytest.mark.parametrize(("k", "folds"), [(0, 5), (5, 1)])
def test_knn_accuracy_rejects_bad_k_or_folds(k: int, folds: int) -> None:
    features, y = class_features(20, 3, 2, strength=1.0)
    with pytest.raises(ConfigError):
        knn_accuracy(features, y, k=k, folds=folds)


def test_leep_rejects_logits_in_place_of_probabilities() -> None:
    with pytest.raises(DataError, match="sum to 1"):
        leep(np.array([[2.0, 1.0], [0.5, 3.0]]), np.array([0, 1]))


def test_source_probabilities_of_another_length_are_rejected() -> None:
    features, y = class_features(20, 3, 2, strength=1.0)
    with pytest.raises(DataError, match="one row per sample"):
        score_features(features, y, source_probabilities=np.full((19, 2), 0.5))
