"""Transferability scores: how well a frozen backbone's features suit a labelled data set.

Fine-tuning every candidate backbone to compare them costs hours; these scores read the
answer off cached features (and, for LEEP and NCE, the backbone's original classifier) in
seconds, so candidates and layers can be ranked before any training.

* :func:`logme` -- evidence of a Bayesian linear head (You et al., ICML 2021).
* :func:`leep` -- log expected empirical prediction (Nguyen et al., ICML 2020).
* :func:`nce` -- negative conditional entropy of target given source labels (Tran et al., ICCV 2019).
* :func:`hscore` -- between-class over total feature covariance (Bao et al., ICIP 2019).
* :func:`knn_accuracy` -- cross-validated cosine nearest-neighbour accuracy.

Every score is higher-is-better and deterministic.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from threadpoolctl import threadpool_limits

from .errors import ConfigError, DataError

__all__ = [
    "TransferabilityScores",
    "hscore",
    "knn_accuracy",
    "leep",
    "logme",
    "nce",
    "score_features",
]

_LOGME_TOL = 1e-3  # relative change of alpha and beta, as the paper; evidence then within ~1e-7 of the optimum
_LOGME_MAX_ITER = 100
_RANK_RTOL = 1e-12  # Gram eigenvalues below this fraction of the largest are treated as zero
_HSCORE_RCOND = 1e-10  # covariance eigenvalues below this fraction of the largest are dropped (pseudo-inverse)


# --------------------------------------------------------------------------- input checks


def _check_features(features: object, name: str = "features") -> np.ndarray:
    """Return features as a float64 (N, D) array, or raise saying what was wrong."""
    array = np.asarray(features)
    if array.ndim != 2:
        raise DataError(f"{name} must be a 2-D array (samples x dimensions); got {array.ndim}-D shape {array.shape}.")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise DataError(f"{name} must have at least one sample and one dimension; got shape {array.shape}.")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
            or array.dtype == np.bool_):
        raise DataError(f"{name} must hold real numbers; got dtype {array.dtype}.")
    array = array.astype(np.float64, copy=False)
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).any(axis=1).sum())
        raise DataError(f"{name} must be finite; {bad} of {array.shape[0]} rows hold NaN or infinity.")
    return array


def _check_labels(y: object, n: int, *, min_classes: int = 2, name: str = "y") -> tuple[np.ndarray, int]:
    """Return labels as codes 0..C-1 (in order of the sorted label values) and C."""
    labels = np.asarray(y)
    if labels.ndim != 1:
        raise DataError(f"{name} must be a 1-D array of integer class labels; got {labels.ndim}-D shape {labels.shape}.")
    if labels.shape[0] != n:
        raise DataError(f"{name} must have one label per sample: expected {n} labels, got {labels.shape[0]}.")
    if np.issubdtype(labels.dtype, np.floating):
        if not np.isfinite(labels).all() or not np.array_equal(labels, np.round(labels)):
            raise DataError(f"{name} must hold integer class labels; got non-integer values of dtype {labels.dtype}.")
        labels = labels.astype(np.int64)
    elif not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
        raise DataError(f"{name} must hold integer class labels; got dtype {labels.dtype}.")
    values, codes = np.unique(labels, return_inverse=True)
    if values.size < min_classes:
        raise DataError(f"{name} must contain at least {min_classes} classes to score transferability; "
                        f"got {values.size} ({values.tolist()[:5]}).")
    return codes.astype(np.int64).reshape(-1), int(values.size)


def _check(features: object, y: object) -> tuple[np.ndarray, np.ndarray, int]:
    """The one door every score goes through: float64 (N, D) features, label codes, class count."""
    f = _check_features(features)
    codes, classes = _check_labels(y, f.shape[0])
    return f, codes, classes


def _check_probabilities(probabilities: object, n: int | None = None) -> np.ndarray:
    """Return row-normalised float64 probabilities, or raise if they are not softmax outputs."""
    p = _check_features(probabilities, name="source_probabilities")
    if n is not None and p.shape[0] != n:
        raise DataError(f"source_probabilities must have one row per sample: expected {n} rows, got {p.shape[0]}.")
    if (p < 0).any():
        raise DataError("source_probabilities must be non-negative (softmax outputs); got negative values.")
    sums = p.sum(axis=1)
    worst = float(np.abs(sums - 1.0).max())
    if worst > 1e-3:
        raise DataError("source_probabilities rows must sum to 1 (softmax outputs, not logits); "
                        f"a row sums to {float(sums[np.argmax(np.abs(sums - 1.0))]):.4g}.")
    return p / sums[:, None]


def _eigh(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric eigendecomposition on one BLAS thread.

    Why: the tridiagonal reduction is memory-bound and synchronises threads constantly; on a
    busy 2-core machine two OpenBLAS threads made it 10x slower (5 s instead of 0.5 s for
    1280 x 1280), while one thread loses little when the machine is idle.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        return np.linalg.eigh(matrix)


def _one_hot(codes: np.ndarray, classes: int) -> sp.csr_matrix:
    """Sparse (C, N) indicator matrix, so class sums cost O(N D) even for 1,000 classes."""
    n = codes.shape[0]
    return sp.csr_matrix((np.ones(n), (codes, np.arange(n))), shape=(classes, n))


# --------------------------------------------------------------------------- LogME


def _logme_spectrum(f: np.ndarray, codes: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Squared singular values s2 (k,) of F and projections z2 = (U^T y_c)^2 (k, C).

    One symmetric eigendecomposition of the smaller Gram matrix (F^T F or F F^T) serves all
    classes; near-null directions are dropped so they cannot inject rounding noise.
    """
    n, d = f.shape
    onehot = _one_hot(codes, classes)
    if n > d:
        eigvals, v = _eigh(f.T @ f)
        keep = eigvals > _RANK_RTOL * max(float(eigvals[-1]), 0.0)
        s2, v = eigvals[keep], v[:, keep]
        q = v.T @ np.asarray((onehot @ f).T)  # V^T F^T Y, (k, C)
        z2 = q * q / s2[:, None]
    else:
        eigvals, u = _eigh(f @ f.T)
        keep = eigvals > _RANK_RTOL * max(float(eigvals[-1]), 0.0)
        s2, u = eigvals[keep], u[:, keep]
        z = np.asarray((onehot @ u).T)  # U^T Y, (k, C)
        z2 = z * z
    return s2, z2


def _logme_from_spectrum(s2: np.ndarray, z2: np.ndarray, counts: np.ndarray, n: int, d: int,
                         tol: float = _LOGME_TOL, max_iter: int = _LOGME_MAX_ITER) -> np.ndarray:
    """Per-class maximised log evidence / N, all classes iterated together."""
    classes = z2.shape[1]
    k = s2.shape[0]
    ynorm2 = counts.astype(np.float64)  # ||y_c||^2 of a one-hot column
    outside = np.maximum(ynorm2 - z2.sum(axis=0), 0.0)  # part of y_c outside the span of F
    # Floors keep alpha, beta finite when a class is fit exactly or not at all (scale-aware).
    s2max = float(s2[-1]) if k else 1.0
    m2_floor = 1e-24 * ynorm2 / s2max
    res_floor = 1e-12 * ynorm2
    alpha = np.ones(classes)
    beta = np.ones(classes)
    active = np.arange(classes)
    for _ in range(max_iter):
        if active.size == 0:
            break
        a, b = alpha[active], beta[active]
        zz = z2 if active.size == classes else z2[:, active]
        inv = np.reciprocal(np.add.outer(s2, a / b)) / b  # 1 / (alpha + beta s_i^2), (k, C')
        gamma = b * (s2 @ inv)
        inv *= inv
        inv *= zz  # z_i^2 / (alpha + beta s_i^2)^2
        m2 = np.maximum(b * b * (s2 @ inv), m2_floor[active])
        res2 = np.maximum(a * a * inv.sum(axis=0) + outside[active], res_floor[active])
        new_a = gamma / m2 if k else a  # with no signal direction alpha does not enter the evidence
        new_b = np.maximum(n - gamma, 1e-12) / res2
        done = (np.abs(new_a - a) <= tol * a) & (np.abs(new_b - b) <= tol * b)
        alpha[active], beta[active] = new_a, new_b
        active = active[~done]
    denom = alpha + np.multiply.outer(s2, beta)  # alpha + beta s_i^2, (k, C)
    ratio = z2 / (denom * denom)
    m2 = beta * beta * (s2 @ ratio)
    res2 = alpha * alpha * ratio.sum(axis=0) + outside
    logdet = np.log(denom).sum(axis=0) + (d - k) * np.log(alpha)
    evidence = (n / 2 * np.log(beta) + d / 2 * np.log(alpha) - n / 2 * math.log(2 * math.pi)
                - beta / 2 * res2 - alpha / 2 * m2 - logdet / 2)
    return evidence / n


def logme(features: np.ndarray, y: np.ndarray) -> float:
    """LogME: mean per-sample log evidence of a Bayesian linear head per one-hot class column.

    Why: it estimates how well a linear classifier on these frozen features will generalise,
    without training one, and is robust across feature dimensions (You et al., ICML 2021).
    """
    f, codes, classes = _check(features, y)
    n, d = f.shape
    s2, z2 = _logme_spectrum(f, codes, classes)
    counts = np.bincount(codes, minlength=classes)
    with threadpool_limits(limits=1, user_api="blas"):  # small mat-vecs: threads only contend (see _eigh)
        return float(_logme_from_spectrum(s2, z2, counts, n, d).mean())


# --------------------------------------------------------------------------- LEEP and NCE


def leep(source_probabilities: np.ndarray, y: np.ndarray) -> float:
    """LEEP: mean log-likelihood of the labels under the source classifier's dummy re-labelling.

    Why: a backbone whose original classes already predict the target classes transfers
    well; it needs only the source softmax outputs (Nguyen et al., ICML 2020).
    """
    p = _check_probabilities(source_probabilities)
    codes, classes = _check_labels(y, p.shape[0])
    n = p.shape[0]
    joint = np.asarray(_one_hot(codes, classes) @ p) / n  # P(y, z), (C, Z)
    marginal = joint.sum(axis=0)  # P(z)
    conditional = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)  # P(y | z)
    eep = np.einsum("nz,nz->n", p, conditional[codes])
    return float(np.log(np.maximum(eep, np.finfo(np.float64).tiny)).mean())


def nce(source_labels: np.ndarray, y: np.ndarray) -> float:
    """NCE: -H(Y | Z), with Z the source model's hard predictions.

    Why: if source predictions determine the target label, the conditional entropy is zero
    and transfer is easy (Tran et al., ICCV 2019). Accepts labels (1-D) or probabilities (2-D).
    """
    source = np.asarray(source_labels)
    if source.ndim == 2:
        z = np.argmax(_check_features(source, name="source_labels"), axis=1)
    elif source.ndim == 1:
        z = source
    else:
        raise DataError(f"source_labels must be 1-D hard labels or 2-D probabilities; got shape {source.shape}.")
    z_codes, source_classes = _check_labels(z, z.shape[0], min_classes=1, name="source_labels")
    codes, classes = _check_labels(y, z_codes.shape[0])
    n = codes.shape[0]
    joint = np.bincount(codes * source_classes + z_codes, minlength=classes * source_classes)
    joint = joint.reshape(classes, source_classes) / n
    marginal = joint.sum(axis=0)
    nonzero = joint > 0
    conditional = joint[nonzero] / np.broadcast_to(marginal, joint.shape)[nonzero]
    return float((joint[nonzero] * np.log(conditional)).sum())


# --------------------------------------------------------------------------- H-score


def hscore(features: np.ndarray, y: np.ndarray) -> float:
    """H-score: tr(cov(f)^+ cov(E[f | y])), the class separation a linear head can exploit.

    Why: it measures how much of the (whitened) feature variance separates the classes, which is
    what a linear head can use (Bao et al., ICIP 2019). A pseudo-inverse keeps constant or
    duplicate features from making it infinite.
    """
    f, codes, classes = _check(features, y)
    n, d = f.shape
    f = f - f.mean(axis=0)
    onehot = _one_hot(codes, classes)
    counts = np.bincount(codes, minlength=classes).astype(np.float64)
    if n > d:
        eigvals, v = _eigh(f.T @ f / n)
        keep = eigvals > _HSCORE_RCOND * max(float(eigvals[-1]), 0.0)
        if not keep.any():
            return 0.0
        means = np.asarray(onehot @ f) / counts[:, None]  # class means of centred features, (C, D)
        whitened = (means @ v[:, keep]) / np.sqrt(eigvals[keep])
        return float((counts / n) @ (whitened * whitened).sum(axis=1))
    # N <= D: with centred F = U S V^T the score reduces to sum_c ||U^T 1_c||^2 / n_c.
    eigvals, u = _eigh(f @ f.T)
    keep = eigvals > _HSCORE_RCOND * max(float(eigvals[-1]), 0.0)
    if not keep.any():
        return 0.0
    sums = np.asarray(onehot @ u[:, keep])  # (C, k)
    return float(((sums * sums).sum(axis=1) / counts).sum())


# --------------------------------------------------------------------------- kNN


def knn_accuracy(features: np.ndarray, y: np.ndarray, k: int = 10, folds: int = 5, seed: int = 0) -> float:
    """Mean stratified-K-fold accuracy of a cosine k-nearest-neighbour classifier.

    Why: a model-free check of how well the features cluster by class, in the same units
    (accuracy) a fine-tuned model would report.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k must be a positive integer number of neighbours; got {k!r}.")
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ConfigError(f"folds must be an integer of at least 2; got {folds!r}.")
    f, codes, classes = _check(features, y)
    counts = np.bincount(codes, minlength=classes)
    smallest = int(counts.min())
    if smallest < 2:
        raise DataError(f"knn_accuracy needs at least 2 samples per class for cross-validation; "
                        f"{int((counts < 2).sum())} class(es) have only 1 sample.")
    folds = min(int(folds), smallest)
    norms = np.linalg.norm(f, axis=1, keepdims=True)
    # float32 halves the distance cost; neighbour order is unaffected at this precision.
    f = np.divide(f, norms, out=np.zeros_like(f), where=norms > 0).astype(np.float32)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = []
    with threadpool_limits(limits=1):  # see _eigh: one thread is ~10x faster on a busy 2-core machine
        for train, test in splitter.split(f, codes):
            model = KNeighborsClassifier(n_neighbors=min(int(k), train.size), algorithm="brute", metric="euclidean")
            model.fit(f[train], codes[train])
            scores.append(float((model.predict(f[test]) == codes[test]).mean()))
    return float(np.mean(scores))


# --------------------------------------------------------------------------- all at once


@dataclass
class TransferabilityScores:
    """All scores of one set of features; ``leep``/``nce`` are None without source probabilities."""

    logme: float
    leep: float | None
    nce: float | None
    hscore: float
    knn_accuracy: float
    seconds: dict[str, float] = field(default_factory=dict)


def score_features(features: np.ndarray, y: np.ndarray,
                   source_probabilities: np.ndarray | None = None) -> TransferabilityScores:
    """Compute every score once, timing each, so a ranking can show scores and their cost."""
    f, codes, _ = _check(features, y)
    if source_probabilities is not None:
        _check_probabilities(source_probabilities, f.shape[0])
    seconds: dict[str, float] = {}

    def timed(name: str, function, *args):
        start = time.perf_counter()
        value = function(*args)
        seconds[name] = time.perf_counter() - start
        return value

    logme_value = timed("logme", logme, f, codes)
    leep_value = nce_value = None
    if source_probabilities is not None:
        leep_value = timed("leep", leep, source_probabilities, codes)
        nce_value = timed("nce", nce, source_probabilities, codes)
    hscore_value = timed("hscore", hscore, f, codes)
    knn_value = timed("knn_accuracy", knn_accuracy, f, codes)
    return TransferabilityScores(logme=logme_value, leep=leep_value, nce=nce_value, hscore=hscore_value,
                                 knn_accuracy=knn_value, seconds=seconds)
