"""Measuring for ``auto``: a backbone's forward time per sample, and a candidate's selection score."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..backbones import build_backbone
from ..data import LabelledData, call_module, labelled_loader, stratified_kfold, stratified_sample, to_device
from ..devices import default_workers
from ..features import extract_features
from ..training import Callback
from ..transfer import Transfer, clone
from .plan import Selection

__all__ = ["forward_seconds", "train_step_seconds", "Scored", "score_candidate"]

CALIBRATION_SAMPLES = (8, 40)  # two passes: the slope between them leaves out each call's fixed cost


def forward_seconds(model: str, data: LabelledData, *, device, batch_size: int = 64,
                    num_workers: int | None = None) -> float:
    """Seconds one more sample takes through ``model`` (reading and preparing it included): the slope
    between two timed passes over stratified samples (after a warm-up one), so that a call's fixed
    cost (building the loader, the first batch) does not count per sample; never cached."""
    backbone = build_backbone(model)
    settings = {"use_cache": False, "batch_size": batch_size, "num_workers": default_workers(num_workers),
                "device": device}
    small, large = (min(n, len(data)) for n in CALIBRATION_SAMPLES)
    sample = data.subset(stratified_sample(data.y, large, seed=0)) if large < len(data) else data
    extract_features(backbone, sample.subset(range(min(4, len(sample)))), **settings)  # first-call costs
    timed = []
    for size in (small, large):
        started = time.perf_counter()
        extract_features(backbone, sample.subset(range(size)), **settings)
        timed.append(time.perf_counter() - started)
    if large > small and timed[1] > timed[0]:
        return (timed[1] - timed[0]) / (large - small)
    return timed[1] / large


def train_step_seconds(model: str, data: LabelledData, *, device, batch_size: int = 16, batches: int = 3) -> float:
    """Seconds one sample takes in a training step through ``model`` (augmented loading, forward and
    backward): the fastest of ``batches`` - 1 timed batches after a warm-up one (the fastest, since
    other work on the machine only ever adds time)."""
    backbone = build_backbone(model)
    sample = data.subset(stratified_sample(data.y, min(batches * batch_size, len(data)), seed=0))
    loader = labelled_loader(sample, backbone.contract, tokenizer=backbone.tokenizer, train=True,
                             batch_size=max(1, len(sample) // batches))
    module = backbone.module.to(device).train()
    timings = []
    for inputs, labels in loader:
        started = time.perf_counter()
        output = call_module(module, to_device(inputs, device))
        (output if isinstance(output, torch.Tensor) else output[0]).float().mean().backward()
        timings.append((time.perf_counter() - started) / len(labels))
    return min(timings[1:] or timings)


@dataclass
class Scored:
    """A candidate's selection score, what it chose, and (one validation share) the fitted model:
    ``complete`` when it already learnt from the whole training split (a probe's final head does)."""

    score: float
    seconds: float
    best_epochs: list[int] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    fitted: Transfer | None = None
    complete: bool = False

    @property
    def best_epoch(self) -> int | None:
        return round(statistics.median(self.best_epochs)) if self.best_epochs else None


def score_candidate(base: Transfer, train: LabelledData, selection: Selection,
                    callbacks: Callable[[], Sequence[Callback]] = tuple) -> Scored:
    """Score ``base`` (an unfitted Transfer) on ``train``: its validation accuracy on the usual
    share, or the mean held-out accuracy of K stratified folds. ``callbacks()`` gives each fit
    its training-loop callbacks (a time limit)."""
    started = time.perf_counter()
    if selection.folds is None:
        fitted = clone(base, val_fraction=selection.val_fraction).fit(train, callbacks=callbacks())
        info = fitted.fit_info_
        return Scored(float(info["val_accuracy"]), time.perf_counter() - started,
                      [info["best_epoch"]] if "best_epoch" in info else [], fitted.history_, fitted,
                      complete=fitted.strategy_.refit_config(info) is None)
    scores, epochs, history = [], [], []
    folds = stratified_kfold(train.y, selection.folds, base.seed, class_names=train.classes,
                             noun="images" if train.modality == "image" else "samples")
    for fit_idx, held_idx in folds:
        fitted = clone(base, val_fraction=selection.val_fraction).fit(train.subset(fit_idx), callbacks=callbacks())
        scores.append(fitted.evaluate(train.subset(held_idx))["accuracy"])
        epochs.extend([fitted.fit_info_["best_epoch"]] if "best_epoch" in fitted.fit_info_ else [])
        history = fitted.history_
    return Scored(float(np.mean(scores)), time.perf_counter() - started, epochs, history)
