"""Likely label errors and outliers, from cached features.

Label issues: each sample's class probabilities are the mean of two models that never saw its label:
a logistic regression (stratified K-fold on the features' top ``COMPONENTS`` principal components:
ten times faster than on all 1,280 dimensions of an EfficientNet, with the same findings on the text
benchmark) and the labels of its ``NEIGHBOURS`` nearest samples by cosine similarity (leave one
out). The two err on different samples: a linear boundary misplaces a sample in a class's fringe
that its neighbours place well, and a neighbourhood in a mixed region misleads where the boundary
does not. Over 4 draws of 5 % flipped labels (``bench/audit.py``'s features), the mean raised the
precision of the flags from 0.26 to 0.30 on flowers5 and from 0.30 to 0.45 on amazon, at recall
0.59 -> 0.58 and 0.68 -> 0.61 (10, 20 or 40 neighbours gave the same within 0.02). On 40 flowers per
class (12 draws), 20 neighbours, half a class, cost recall (0.75 -> 0.67), which 10 kept higher
(0.70); hence at most a quarter of the smallest class votes. For texts a third model joins the mean:
a logistic regression on TF-IDF word unigrams and bigrams, which reads the words themselves where the
two others read one sentence embedding, and so errs on other samples (alone it ranks the flips worse
than either). Over 8 draws of ``bench/audit.py``'s injection it raised the precision of the flags
from 0.50 to 0.64 on amazon, 0.51 to 0.60 on yelp and 0.86 to 0.89 on sms_spam (4 draws), at recall
0.65 -> 0.59, 0.61 -> 0.58 and 0.73 -> 0.73; precision at recall 0.7 of the ranking by the given
label's probability rose from 0.42 to 0.52 (amazon) and 0.41 to 0.48 (yelp). Then cleanlab's
confident learning (:func:`cleanlab.filter.find_label_issues` with
``filter_by="confident_learning"``, the off-diagonal of the confident joint) picks the samples
whose given label those probabilities contradict; the score is one minus the probability of the
given label. Of cleanlab's filters this one flags the fewest: an audit's findings are read by
people and ``--drop`` deletes them, so a false alarm costs more than a miss.

Outliers: a sample is flagged when one of two distances to its nearest class lies beyond Tukey's
far-out fence (third quartile + 3 x interquartile range) of all the samples' distances:
- the cosine distance between its normalised features and the class mean, which finds a lone stray
  file even in a small data set;
- the Mahalanobis distance to the class mean, under one covariance shared by the classes (Lee et
  al. 2018's detector; Ledoit-Wolf shrinkage), in the ``OUTLIER_COMPONENTS`` leading principal
  components (at most one per 10 samples): a covariance of 32 dimensions is estimated well from a
  few hundred samples, while in all 1,280 of an EfficientNet it is mostly noise. It finds a batch of
  alien files, which the cosine distance misses because together they pull the principal spread
  their way. The means and the covariance are estimated twice, the second time without the samples
  beyond the fence of the first, whose own spread would otherwise widen the covariance along their
  direction and hide them (the reweighting step of robust estimators such as MCD).
Class means, unlike nearest neighbours, are not pulled towards a cluster of alien samples that are
close to each other (a batch of screenshots in a photo collection). On flowers5's training split
with 35 digit scans mixed in, the Mahalanobis distance flags all 35 and nothing else; the cosine
distance alone flagged 10 of them in the benchmark.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .findings import Finding

__all__ = ["FENCE", "label_issue_findings", "lexical_probabilities", "neighbour_probabilities", "out_of_fold_probabilities",
           "outlier_findings", "outlier_scores"]

log = logging.getLogger(__name__)
FENCE = 3.0  # Tukey's "far out": beyond Q3 + 3 IQR
C_GRID = (0.01, 0.1, 1.0)
LEXICAL_C_GRID = (1.0, 10.0, 100.0)
COMPONENTS = 128
NEIGHBOURS = 20
OUTLIER_COMPONENTS = 32


def _principal_components(x: np.ndarray, components: int, seed: int) -> np.ndarray:
    """``x`` projected on its leading principal components. Narrow features (a sentence encoder's
    384) with at least as many rows take the exact eigendecomposition of their covariance, 3-4 times
    faster there than scikit-learn's randomized solver; wide ones (an EfficientNet's 1,280) keep the
    randomized solver, faster at that width."""
    from sklearn.decomposition import PCA

    narrow = x.shape[1] <= 512 and x.shape[0] >= x.shape[1]
    return PCA(components, svd_solver="covariance_eigh" if narrow else "auto", random_state=seed).fit_transform(x)


def _logistic(c: float):
    """A logistic regression on standardised features (each column scaled by the training part)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=300, tol=1e-3))


def _choose_c(x, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]], make: Callable[[float], Any],
              grid: Sequence[float]) -> tuple[float, float]:
    """The C of ``grid`` whose model ``make(c)`` has the best held-out
    log-loss on the first fold; and by how much that model's per-sample loss beats predicting the
    training part's class shares for every sample, less one standard error (positive: it has learnt
    something beyond the noise of the held-out samples; NaN from one held-out sample)."""
    train, held = folds[0]
    x_train, x_held = x[train], x[held]
    classes = list(np.unique(y))
    truth = np.searchsorted(classes, y[held])

    def losses(probabilities: np.ndarray) -> np.ndarray:
        return -np.log(np.clip(probabilities[np.arange(len(held)), truth], 1e-15, 1.0))

    per_sample = {}
    for c in grid:
        model = make(c).fit(x_train, y[train])
        probabilities = np.zeros((len(held), len(classes)))
        probabilities[:, np.searchsorted(classes, model.classes_)] = model.predict_proba(x_held)
        per_sample[c] = losses(probabilities)
    best = min(per_sample, key=lambda c: per_sample[c].mean())
    shares = np.array([(y[train] == c).mean() for c in classes])
    gain = losses(np.tile(shares, (len(held), 1))) - per_sample[best]
    if len(gain) < 2:  # no standard error from one sample
        return best, float("nan")
    return best, float(gain.mean() - gain.std(ddof=1) / np.sqrt(len(gain)))


def neighbour_probabilities(features: np.ndarray, y: np.ndarray, n_classes: int,
                            neighbours: int = NEIGHBOURS) -> np.ndarray:
    """Each class's share among a sample's nearest other samples (cosine similarity), with half a vote
    added to every class so that none is impossible. At most a quarter of the smallest class votes
    (and at least 5), so that in small data the neighbours stay near the sample."""
    from sklearn.neighbors import NearestNeighbors

    smallest = int(np.bincount(y, minlength=n_classes)[np.unique(y)].min())
    count = min(neighbours, max(5, smallest // 4), len(y) - 1)
    index = NearestNeighbors(n_neighbors=count + 1, metric="cosine").fit(features).kneighbors(
        features, return_distance=False)
    own = index == np.arange(len(y))[:, None]
    own[~own.any(1), -1] = True  # an exact copy ranked before the sample itself: drop the farthest instead
    others = index[~own].reshape(len(y), count)
    votes = np.stack([(y[others] == c).sum(1) for c in range(n_classes)], axis=1)
    return (votes + 0.5) / (count + 0.5 * n_classes)


def out_of_fold_probabilities(features: np.ndarray, y: np.ndarray, n_classes: int, *, folds: int = 5,
                              seed: int = 0, texts: Sequence[str] | None = None) -> np.ndarray:
    """Class probabilities of each sample from models that never saw its label: the mean of a logistic
    regression fit on the other folds (stratified; C chosen on the first fold by held-out log-loss;
    features wider than ``COMPONENTS`` projected on their principal components first),
    :func:`neighbour_probabilities` and, given ``texts``, :func:`lexical_probabilities`."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold

    neighbours = neighbour_probabilities(features, y, n_classes)  # on all dimensions, before the projection
    if min(features.shape) > COMPONENTS:
        features = _principal_components(features, COMPONENTS, seed)
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(features, y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        c, _ = _choose_c(features, y, splits, _logistic, C_GRID)
        views = [_fold_probabilities(lambda: _logistic(c), features, y, n_classes, splits), neighbours]
        lexical = lexical_probabilities(texts, y, n_classes, splits) if texts is not None else None
    if lexical is not None:
        views.append(lexical)
    log.info("Audit: out-of-fold probabilities from %d folds (C=%g), nearest neighbours%s", folds, c,
             "" if lexical is None else " and word n-grams")
    return np.mean(views, axis=0)


def _fold_probabilities(make: Callable[[], Any], x, y: np.ndarray, n_classes: int,
                        splits: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Each sample's class probabilities from ``make()`` fitted on the folds it is not in."""
    probabilities = np.zeros((len(y), n_classes))
    for train, held in splits:
        model = make().fit(x[train], y[train])
        probabilities[np.ix_(held, model.classes_)] = model.predict_proba(x[held])
    return probabilities


def lexical_probabilities(texts: Sequence[str], y: np.ndarray, n_classes: int,
                          splits: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray | None:
    """Out-of-fold class probabilities of a logistic regression on the texts' TF-IDF word unigrams and
    bigrams (C chosen on the first fold by held-out log-loss), or None when the texts hold no words, or
    words that predict the labels no better than the class shares do.
    A view of the texts that the sentence encoder does not share (see the module docstring)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    try:  # the vocabulary and its weights use no labels, so every text takes part
        x = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit_transform(texts).tocsr()
    except ValueError:  # no word of two or more letters in any text
        return None

    def make(c: float):
        return OneVsRestClassifier(LogisticRegression(C=c, solver="liblinear"))

    c, gain = _choose_c(x, y, splits, make, LEXICAL_C_GRID)
    if not gain > 0:  # the words predict the labels no better than the class shares (e.g. no spaces between words)
        return None
    return _fold_probabilities(lambda: make(c), x, y, n_classes, splits)


def label_issue_findings(y: np.ndarray, probabilities: np.ndarray, classes: Sequence[str], locations: Sequence[str],
                         parts: Sequence[str | None], texts: Sequence[str] | None) -> list[Finding]:
    """cleanlab's label issues, each with the label the out-of-fold model suggests and a score."""
    from cleanlab.filter import find_label_issues

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flagged = find_label_issues(labels=y, pred_probs=probabilities, filter_by="confident_learning")
    findings = []
    for i in np.flatnonzero(flagged):
        suggested = int(probabilities[i].argmax())
        findings.append(Finding(
            "label-issue", int(i), locations[i], float(1 - probabilities[i, y[i]]), label=classes[y[i]],
            suggested=classes[suggested], split=parts[i], text=texts[i] if texts else None,
            detail=f"labelled {classes[y[i]]}, looks like {classes[suggested]} "
                   f"(p={probabilities[i, suggested]:.2f} against {probabilities[i, y[i]]:.2f})"))
    return findings


def outlier_scores(unit: np.ndarray, y: np.ndarray | None) -> np.ndarray:
    """How far beyond its far-out fence each row lies, on the farther of the two distances to the
    nearest class (see the module docstring): positive for an outlier."""
    return np.maximum(*(_beyond_fence(distances) for distances in (_cosine_distances(unit, y),
                                                                      _mahalanobis_distances(unit, y))))


def _beyond_fence(distances: np.ndarray) -> np.ndarray:
    """Distances beyond the far-out fence, in interquartile ranges (0 at the fence)."""
    q1, q3 = np.percentile(distances, [25, 75])
    return (distances - (q3 + FENCE * (q3 - q1))) / max(float(q3 - q1), 1e-12)


def _cosine_distances(unit: np.ndarray, y: np.ndarray | None) -> np.ndarray:
    """One minus the cosine similarity of each row to its nearest class mean."""
    groups = [np.arange(len(unit))] if y is None else [np.flatnonzero(y == c) for c in np.unique(y)]
    means = np.stack([unit[g].mean(0) for g in groups])
    means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    return 1 - (unit @ means.T).max(1)


def _mahalanobis_distances(unit: np.ndarray, y: np.ndarray | None) -> np.ndarray:
    """Mahalanobis distances to the nearest class mean in the leading principal components, estimated
    again without the rows beyond the far-out fence of the first estimate."""
    components = min(OUTLIER_COMPONENTS, max(1, len(unit) // 10), unit.shape[1])
    z = _principal_components(unit, components, 0) if components < unit.shape[1] else unit
    y = np.zeros(len(z), dtype=int) if y is None else np.asarray(y)
    distances = _nearest_class_distance(z, y, np.ones(len(z), dtype=bool))
    return _nearest_class_distance(z, y, _beyond_fence(distances) <= 0)


def _nearest_class_distance(z: np.ndarray, y: np.ndarray, fit: np.ndarray) -> np.ndarray:
    """Mahalanobis distances to the nearest class mean, means and shared covariance from the rows ``fit``."""
    from sklearn.covariance import LedoitWolf

    classes = [c for c in np.unique(y) if (fit & (y == c)).any()]
    means = np.stack([z[fit & (y == c)].mean(0) for c in classes])
    centred = z[fit] - means[np.searchsorted(classes, y[fit])]
    precision = LedoitWolf().fit(centred).precision_
    squared = np.stack([np.einsum("ij,jk,ik->i", z - m, precision, z - m) for m in means], axis=1)
    return np.sqrt(np.maximum(squared.min(1), 0.0))


def outlier_findings(scores: np.ndarray, labels: Sequence[str] | None, locations: Sequence[str],
                     parts: Sequence[str | None], texts: Sequence[str] | None) -> list[Finding]:
    """Samples beyond a far-out fence (``scores`` > 0, from :func:`outlier_scores`), scored by how far
    beyond (0.5 at the fence, 1 for the farthest)."""
    top = max(float(scores.max()), 1e-9)
    return [Finding("outlier", int(i), locations[i], float(0.5 + 0.5 * scores[i] / top),
                    label=labels[i] if labels else None, split=parts[i], text=texts[i] if texts else None,
                    detail=f"{scores[i]:.1f} interquartile ranges beyond the far-out fence of distances to the "
                           "nearest class mean")
            for i in np.flatnonzero(scores > 0)]
