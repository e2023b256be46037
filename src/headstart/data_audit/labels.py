"""Likely label errors and outliers, from cached features.

Label issues: each sample's class probabilities come from a logistic regression that never saw
it (stratified K-fold on the features' top ``COMPONENTS`` principal components: ten times faster
than on all 1,280 dimensions of an EfficientNet, with the same findings on the text benchmark),
and cleanlab's confident learning (:func:`cleanlab.filter.find_label_issues` with
``filter_by="confident_learning"``, the off-diagonal of the confident joint) picks the samples
whose given label those probabilities contradict; the score is one minus the probability of the
given label. Of cleanlab's filters this one flags the fewest: an audit's findings are read by
people and ``--drop`` deletes them, so a false alarm costs more than a miss.

Outliers: a sample's distance to its nearest class is one minus the cosine similarity between
its (normalised) features and that class's mean; a sample is flagged when the distance lies
beyond Tukey's far-out fence (third quartile + 3 x interquartile range) of all the samples'
distances. Class means, unlike nearest neighbours, are not pulled towards a cluster of alien
samples that are close to each other (a batch of screenshots in a photo collection).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np

from .findings import Finding

__all__ = ["FENCE", "label_issue_findings", "out_of_fold_probabilities", "outlier_findings", "outlier_scores"]

log = logging.getLogger(__name__)
FENCE = 3.0  # Tukey's "far out": beyond Q3 + 3 IQR
C_GRID = (0.01, 0.1, 1.0)
COMPONENTS = 128


def _standardise(x: np.ndarray, fit_on: np.ndarray) -> np.ndarray:
    mean, scale = fit_on.mean(0), fit_on.std(0)
    scale[scale < 1e-8] = 1.0
    return (x - mean) / scale


def _logistic(c: float):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=300, tol=1e-3)


def _choose_c(x: np.ndarray, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """The C of the grid with the best held-out log-loss on the first fold."""
    from sklearn.metrics import log_loss

    train, held = folds[0]
    z_train, z_held = _standardise(x[train], x[train]), _standardise(x[held], x[train])
    losses = {c: log_loss(y[held], _logistic(c).fit(z_train, y[train]).predict_proba(z_held),
                          labels=np.unique(y)) for c in C_GRID}
    return min(losses, key=losses.get)


def out_of_fold_probabilities(features: np.ndarray, y: np.ndarray, n_classes: int, *, folds: int = 5,
                              seed: int = 0) -> np.ndarray:
    """Class probabilities of each sample from a logistic regression fit on the other folds
    (stratified), with C chosen on the first fold by held-out log-loss; features wider than
    ``COMPONENTS`` are projected on their principal components first."""
    from sklearn.decomposition import PCA
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold

    if min(features.shape) > COMPONENTS:
        features = PCA(COMPONENTS, random_state=seed).fit_transform(features)
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(features, y))
    probabilities = np.zeros((len(y), n_classes))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        c = _choose_c(features, y, splits)
        for train, held in splits:
            model = _logistic(c).fit(_standardise(features[train], features[train]), y[train])
            probabilities[np.ix_(held, model.classes_)] = model.predict_proba(
                _standardise(features[held], features[train]))
    log.info("Audit: out-of-fold probabilities from %d folds, C=%g", folds, c)
    return probabilities


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
    """One minus the cosine similarity of each row of ``unit`` to its nearest class mean."""
    groups = [np.arange(len(unit))] if y is None else [np.flatnonzero(y == c) for c in np.unique(y)]
    means = np.stack([unit[g].mean(0) for g in groups])
    means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    return 1 - (unit @ means.T).max(1)


def outlier_findings(scores: np.ndarray, labels: Sequence[str] | None, locations: Sequence[str],
                     parts: Sequence[str | None], texts: Sequence[str] | None) -> tuple[list[Finding], float]:
    """Samples whose distance lies beyond the far-out fence, scored by how far beyond (0..1), and the fence."""
    q1, q3 = np.percentile(scores, [25, 75])
    fence = float(q3 + FENCE * (q3 - q1))
    top = max(float(scores.max()), fence + 1e-9)
    findings = [Finding("outlier", int(i), locations[i], float(0.5 + 0.5 * (scores[i] - fence) / (top - fence)),
                        label=labels[i] if labels else None, split=parts[i], text=texts[i] if texts else None,
                        detail=f"distance {scores[i]:.3f} to the nearest class mean (fence {fence:.3f})")
                for i in np.flatnonzero(scores > fence)]
    return findings, fence
