"""Out-of-fold class probabilities from a network fitted in each fold (``audit --label-model``).

The default label check reads models of the cached features (:mod:`.labels`): a second's work. A
network trained on the data itself separates its classes better, so where it contradicts a label
the label is more often wrong. Measured with ``bench/audit.py``'s injection into amazon (775 reviews,
5 % of the labels flipped, 5 seeds), minilm: lora's out-of-fold accuracy on the noisy labels 0.86-0.89
against 0.81-0.82 for the features' models. cleanlab on the mean of both: recall 0.69, precision
0.62 (means over the seeds; 3 seeds of 5 meet R >= 0.7 with P >= 0.6); the features alone 0.61 and
0.51 (none); lora alone 0.76 and 0.57 (2). The mean is kept, as the default check prefers
precision. The price is one fit per fold: five lora fits of minilm on those reviews took 4-7
minutes on 2 cores, so the check is asked for, not the default.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..data import LabelledData

if TYPE_CHECKING:
    from ..transfer import Transfer

__all__ = ["fitted_probabilities", "label_estimator"]


def label_estimator(label_model: str | Transfer, *, model: str, seed: int, weights: str | Path | None = None,
                    settings: dict | None = None) -> Transfer:
    """The unfitted network to fit in each fold: ``label_model`` itself when it is a Transfer, else
    that strategy (its defaults) on backbone ``model``. ``settings``: Transfer's feature and device
    options (cache, batch size, workers, device)."""
    from ..strategies import get_strategy
    from ..transfer import Transfer

    if isinstance(label_model, Transfer):
        return label_model
    get_strategy(label_model)  # an unknown name is a clear error
    return Transfer(model, label_model, weights=weights, seed=seed, **(settings or {}))


def fitted_probabilities(data: LabelledData, base: Transfer, *, folds: int, seed: int,
                         progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Each sample's class probabilities (columns in ``data.classes`` order) from a clone of ``base``
    fitted on the other ``folds`` - 1 stratified folds (each fit early-stops on its own validation
    share)."""
    from ..data.splits import stratified_kfold
    from ..transfer import clone

    probabilities = np.zeros((len(data), len(data.classes)))
    parts = stratified_kfold(data.y, folds, seed, class_names=data.classes,
                             noun="images" if data.modality == "image" else "samples")
    for number, (fit_idx, held_idx) in enumerate(parts, 1):
        fitted = clone(base).fit(data.subset(fit_idx))
        columns = [data.classes.index(name) for name in fitted.classes_]
        probabilities[np.ix_(held_idx, columns)] = fitted.predict_proba(data.subset(held_idx))
        if progress:
            progress(number, len(parts))
    return probabilities
