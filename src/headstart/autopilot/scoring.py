"""Measuring for ``auto``: a backbone's forward time per sample, and a candidate's selection score."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..backbones import build_backbone
from ..data import (LabelledData, call_module, labelled_loader, stratified_kfold, stratified_sample,
                    stratified_split, to_device)
from ..devices import default_workers
from ..features import extract_features
from ..training import Callback
from ..transfer import Transfer, clone
from .plan import Selection

__all__ = ["forward_seconds", "train_step_seconds", "Scored", "score_candidate", "best_blend", "average_accuracy"]

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
    ``complete`` when it already learnt from the whole training split (a probe's final head does).
    ``probabilities``: its honest predictions of ``labels`` (the validation share, or every sample
    out of fold), which ensembles are scored on; None where it has none (a probe's final head has
    seen the validation share)."""

    score: float
    seconds: float
    best_epochs: list[int] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    fitted: Transfer | None = None
    complete: bool = False
    probabilities: np.ndarray | None = None
    labels: np.ndarray | None = None
    tta_probabilities: np.ndarray | None = None  # the same predictions with test-time augmentation
    tta: bool = False  # whether ``score`` and ``probabilities`` are those with test-time augmentation

    @property
    def best_epoch(self) -> int | None:
        return round(statistics.median(self.best_epochs)) if self.best_epochs else None

    def take_tta(self) -> float | None:
        """Test-time augmentation's gain in held-out accuracy (None: not measured). When it is strictly
        positive, it is taken: the score rises by it and the honest probabilities become the augmented
        ones (ensembles blend those)."""
        if self.tta or self.tta_probabilities is None or self.probabilities is None:
            return None
        gain = _accuracy(self.tta_probabilities, self.labels) - _accuracy(self.probabilities, self.labels)
        if gain > 0:
            self.score, self.probabilities, self.tta = self.score + gain, self.tta_probabilities, True
        return gain


def _accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float((probabilities.argmax(1) == labels).mean())


def _augmented(fitted: Transfer, data: LabelledData) -> np.ndarray:
    """``fitted``'s probabilities of ``data`` with test-time augmentation (the model is left as it was)."""
    fitted.tta = True
    try:
        return fitted.predict_proba(data)
    finally:
        fitted.tta = False


def score_candidate(base: Transfer, train: LabelledData, selection: Selection,
                    callbacks: Callable[[], Sequence[Callback]] = tuple, tta: bool = False,
                    split_seed: int | None = None) -> Scored:
    """Score ``base`` (an unfitted Transfer) on ``train``: its validation accuracy on the usual
    share, or the mean held-out accuracy of K stratified folds. ``callbacks()`` gives each fit
    its training-loop callbacks (a time limit). ``tta``: predict the held-out images with
    test-time augmentation too (:meth:`Scored.take_tta` decides). ``split_seed`` (default: the
    Transfer's seed) draws the validation share or folds, so candidates trained with other seeds
    are scored on the same held-out samples."""
    started = time.perf_counter()
    seed = base.seed if split_seed is None else split_seed
    if selection.folds is None:
        fit_idx, val_idx = stratified_split(train.y, [selection.val_fraction], seed, class_names=train.classes)
        held = train.subset(val_idx)
        fitted = clone(base, val_fraction=selection.val_fraction).fit(train.subset(fit_idx), held,
                                                                      callbacks=callbacks())
        info = fitted.fit_info_
        complete = fitted.strategy_.refit_config(info) is None
        probabilities = None if complete else fitted.predict_proba(held)
        augmented = _augmented(fitted, held) if tta and not complete else None
        return Scored(float(info["val_accuracy"]), time.perf_counter() - started,
                      [info["best_epoch"]] if "best_epoch" in info else [], fitted.history_, fitted,
                      complete=complete, probabilities=probabilities, labels=train.y[val_idx],
                      tta_probabilities=augmented)
    scores, epochs, history = [], [], []
    out_of_fold = np.zeros((len(train), len(train.classes)))
    augmented = np.zeros_like(out_of_fold) if tta else None
    folds = stratified_kfold(train.y, selection.folds, seed, class_names=train.classes,
                             noun="images" if train.modality == "image" else "samples")
    for fit_idx, held_idx in folds:
        fitted = clone(base, val_fraction=selection.val_fraction).fit(train.subset(fit_idx), callbacks=callbacks())
        out_of_fold[held_idx] = fitted.predict_proba(train.subset(held_idx))
        if augmented is not None:
            augmented[held_idx] = _augmented(fitted, train.subset(held_idx))
        scores.append(float((out_of_fold[held_idx].argmax(1) == train.y[held_idx]).mean()))
        epochs.extend([fitted.fit_info_["best_epoch"]] if "best_epoch" in fitted.fit_info_ else [])
        history = fitted.history_
    return Scored(float(np.mean(scores)), time.perf_counter() - started, epochs, history,
                  probabilities=out_of_fold, labels=train.y, tta_probabilities=augmented)


def average_accuracy(members: Sequence[Scored]) -> float:
    """The accuracy of the members' averaged honest probabilities (scored on the same samples)."""
    return _accuracy(np.mean([m.probabilities for m in members], axis=0), members[0].labels)


def best_blend(candidates: dict[str, Scored], most: int = 3) -> tuple[list[str], float]:
    """The members whose averaged probabilities score best (greedy forward selection, as Caruana et
    al.'s ensemble selection, without repeats): start from the best candidate and add the one that
    raises the accuracy most, while one does and fewer than ``most`` are in. Returns the names and
    the accuracy; a single name when no blend beats the best candidate."""
    usable = {name: s for name, s in candidates.items() if s.probabilities is not None}
    if not usable:
        return [], 0.0

    def accuracy(names: list[str]) -> float:
        return average_accuracy([usable[n] for n in names])

    chosen = [max(usable, key=lambda n: (accuracy([n]), n))]
    best = accuracy(chosen)
    while len(chosen) < min(most, len(usable)):
        score, name = max((accuracy([*chosen, n]), n) for n in usable if n not in chosen)
        if score <= best:
            break
        chosen, best = [*chosen, name], score
    return chosen, best
