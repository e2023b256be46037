"""Stratified splits: every part keeps the class balance of the whole data set.

Small data sets are headstart's home ground, so a split that leaves a class out of a
part is refused up front with the class named, instead of failing later in a metric.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from headstart.errors import ConfigError, DataError

__all__ = ["stratified_split", "stratified_kfold", "few_shot_indices", "stratified_sample"]

logger = logging.getLogger(__name__)


def _part_names(n_held_out: int) -> list[str]:
    if n_held_out == 1:
        return ["train", "test"]
    if n_held_out == 2:
        return ["train", "val", "test"]
    return ["train"] + [f"part {i + 1}" for i in range(n_held_out)]


def _class_name(cls: np.integer, class_names: Sequence[str] | None) -> str:
    """A class as the user knows it: its name, never the index models use."""
    if class_names is not None:
        return f"class '{class_names[int(cls)]}'"
    return f"the class with index {cls} (pass `class_names=` to name it)"


def _check_split(y: np.ndarray, fractions: list[float], names: list[str], class_names: Sequence[str] | None,
                 noun: str) -> np.ndarray:
    """The classes of ``y``, once the fractions are valid and every class can fill every part."""
    if not fractions or any(not 0.0 < f < 1.0 for f in fractions) or sum(fractions) >= 1.0:
        raise ConfigError(
            "Split fractions must each be between 0 and 1 and sum to less than 1. "
            f"Got {fractions} instead."
        )
    classes, counts = np.unique(y, return_counts=True)
    for cls, count in zip(classes, counts):
        if count < len(names):
            raise DataError(
                f"{_class_name(cls, class_names)} has {count} sample{'s' if count != 1 else ''}: too few for a "
                f"stratified split into {'/'.join(names)}; add {noun} or lower --test/--val"
            )
    return classes


def stratified_split(
    y: np.ndarray,
    fractions: Sequence[float],
    seed: int,
    *,
    class_names: Sequence[str] | None = None,
    noun: str = "samples",
) -> list[np.ndarray]:
    """Split sample indices into [train, *held_out], each part stratified by class.

    ``fractions`` are the held-out shares of the whole data set, e.g. ``[0.2]`` for
    train/test or ``[0.1, 0.2]`` for train/val/test. The parts are disjoint, cover every
    index, are sorted ascending and depend only on ``seed``. ``class_names`` and ``noun``
    only make error messages readable.
    """
    y = np.asarray(y)
    fractions = [float(f) for f in fractions]
    names = _part_names(len(fractions))
    classes = _check_split(y, fractions, names, class_names, noun)
    n_total, n_classes = len(y), len(classes)
    remaining = np.arange(n_total)
    held_out: list[np.ndarray] = []
    # Take the last part (test) first, then the others from what is left.
    for fraction, name in zip(reversed(fractions), reversed(names[1:])):
        size = max(int(round(fraction * n_total)), n_classes)
        if len(remaining) - size < n_classes:
            raise DataError(
                f"{n_total} {noun} in {n_classes} classes are too few for a stratified split "
                f"into {'/'.join(names)}; add {noun} or lower --test/--val"
            )
        if size != round(fraction * n_total):
            logger.info("%s part grown to %d %s so it can hold every class", name, size, noun)
        try:
            keep, part = train_test_split(
                remaining, test_size=size, random_state=seed, stratify=y[remaining]
            )
        except ValueError as exc:  # a class ran out of samples for the later parts
            raise DataError(
                f"cannot make a stratified {name} part: {exc}; add {noun} or lower --test/--val"
            ) from exc
        held_out.insert(0, np.sort(part))
        remaining = keep
    return [np.sort(remaining), *held_out]


def stratified_kfold(
    y: np.ndarray,
    k: int,
    seed: int,
    *,
    class_names: Sequence[str] | None = None,
    noun: str = "samples",
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split sample indices into ``k`` (train, held-out) pairs for cross-validation.

    The held-out parts are disjoint, cover every index once and keep each class's share;
    every class needs at least ``k`` samples, so each held-out part holds every class.
    """
    y = np.asarray(y)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise ConfigError(f"The 'cv' option must be an int >= 2 (the number of folds). Got {k!r} instead.")
    classes, counts = np.unique(y, return_counts=True)
    for cls, count in zip(classes, counts):
        if count < k:
            raise DataError(
                f"{_class_name(cls, class_names)} has {count} sample{'s' if count != 1 else ''} in the training split: "
                f"too few for {k}-fold cross-validation; add {noun} or lower --cv to at most {count}"
            )
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)
    return [(np.sort(train), np.sort(held_out)) for train, held_out in folds]


def few_shot_indices(y: np.ndarray, per_class: int, seed: int = 0) -> list[int]:
    """``per_class`` random sample indices of each class (all of a class that has fewer),
    sorted ascending; the choice depends only on ``seed`` (a few-shot training set)."""
    if isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) or per_class < 1:
        raise ConfigError(f"The samples kept per class must be an int >= 1. Got {per_class!r} instead.")
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(y == c))[:per_class] for c in np.unique(y)]
    return sorted(int(i) for i in np.concatenate(keep)) if keep else []


def stratified_sample(y: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """About ``size`` sample indices, sorted ascending, in which each class keeps its share of ``y``
    (largest remainders round it) and every class has at least one; every index when ``size`` is at
    least ``len(y)``. The choice depends only on ``seed``, and a class's draw is a prefix of one
    seeded permutation, so a larger ``size`` keeps what a smaller one drew."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ConfigError(f"The sample size must be an int >= 1. Got {size!r} instead.")
    y = np.asarray(y)
    if size >= len(y):
        return np.arange(len(y))
    classes, counts = np.unique(y, return_counts=True)
    exact = size * counts / len(y)
    quota = np.minimum(counts, np.maximum(1, np.floor(exact).astype(int)))
    for i in np.argsort(quota - exact, kind="stable"):  # largest remainder first
        if quota.sum() >= size:
            break
        quota[i] += quota[i] < counts[i]
    while quota.sum() > max(size, len(classes)):  # classes raised to one: take it from those over their share
        i = int(np.argmax(np.where(quota > 1, quota - exact, -np.inf)))
        quota[i] -= 1
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(np.flatnonzero(y == c))[:q] for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picks))
