"""The transfer gain pre-training bought: one linear probe on labelled data with the backbone before,
and one with it after, on the same split.

The probe is the ``linear-probe`` strategy's head (logistic regression, C chosen on a stratified
validation share of the probe's training part) on frozen features.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from ..backbones import Backbone
from ..data import LabelledData, stratified_split
from ..evaluation import classification_metrics
from ..features import extract_features
from ..heads import fit_linear_probe

__all__ = ["probe_scores", "probe_gain"]

SCORES = ("accuracy", "balanced_accuracy", "f1")


def probe_scores(backbone: Backbone, train: LabelledData, test: LabelledData, *, seed: int = 0,
                 **features) -> dict:
    """Accuracy, balanced accuracy and macro F1 on ``test`` of a linear probe fitted on ``train`` with
    ``backbone``'s features; ``features`` are :func:`~headstart.extract_features`'s options."""
    test = test.with_classes(train.classes)
    x_train, x_test = (extract_features(backbone, part, **features) for part in (train, test))
    fit, val = stratified_split(train.y, [0.2], seed, class_names=train.classes)
    head = fit_linear_probe(x_train[fit], train.y[fit], x_train[val], train.y[val], len(train.classes)).head
    with torch.inference_mode():
        predicted = head(torch.as_tensor(x_test)).argmax(1).numpy()
    metrics = classification_metrics(test.y, predicted, train.classes)
    return {**{key: metrics[key] for key in SCORES}, "train": len(train), "test": len(test)}


def probe_gain(base: Backbone, module: nn.Module, train: LabelledData, test: LabelledData, *, seed: int = 0,
               **features) -> dict:
    """The probe with ``base``, and with ``module`` (the pre-trained backbone) in its place: before,
    after, and the gain in accuracy points. The base's features come from the cache; the new ones
    are computed afresh (the run that will hold them is not written yet)."""
    before = probe_scores(base, train, test, seed=seed, **features)
    trained = replace(base, module=module, name=f"{base.name} (pre-trained)", weights_digest="unsaved")
    after = probe_scores(trained, train, test, seed=seed, **{**features, "use_cache": False})
    return {"data": train.source, "train": len(train), "test": len(test), "before": before, "after": after,
            "gain_points": round(100 * (after["accuracy"] - before["accuracy"]), 2)}
