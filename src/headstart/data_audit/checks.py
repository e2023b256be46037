"""The audit itself: features from the cache, then every check on them.

Near-duplicate threshold. Two samples are near-duplicates when the cosine similarity of their
power-normalised features (:mod:`.similarity`) is at least ``NEAR_DUPLICATE_THRESHOLD`` of
their modality. The values come from ``bench/audit_threshold.py``: the lowest threshold of a
grid (0.80 ... 0.96) at which no pair of *different* images (18 scikit-image photos, 100 LFW
faces: one class of look-alikes) or of different sentences (yelp reviews, which the audit
benchmark does not score) is similar enough. Texts are also near-duplicates when their words are
the same once case and punctuation are ignored, or one word apart (:mod:`.texts`): a sentence
embedding moves more under a dropped word than under a different sentence on the same topic.
Images must also agree in pixels (:mod:`.pixels`): features alone join different photos of one
texture.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..backbones import Backbone, build_backbone, default_backbone, feature_identity
from ..contract import InputContract
from ..data import LabelledData
from ..devices import check_device_name, default_workers, resolve_device
from ..errors import ConfigError, DataError
from ..features import cached_features, content_digests, extract_features
from .copies import against_findings, copy_findings, copy_groups, leakage_findings
from .findings import Audit, Finding
from .fitted import fitted_probabilities, label_estimator
from .labels import (
    label_issue_findings,
    out_of_fold_probabilities,
    FENCE,
    outlier_findings,
    outlier_scores,
)
from .pixels import AGREEMENT, confirmed
from .properties import image_properties, property_findings
from .similarity import pairs_between, similar_pairs, unit_rows
from .texts import one_word_apart, text_findings

if TYPE_CHECKING:
    from ..transfer import Transfer

__all__ = ["NEAR_DUPLICATE_THRESHOLD", "audit", "near_duplicate_threshold", "parts_of"]

NEAR_DUPLICATE_THRESHOLD = {"image": 0.92, "text": 0.92}
Progress = Callable[..., None]


def near_duplicate_threshold(modality: str, threshold: float | None = None) -> float:
    """The threshold given (checked), or the modality's measured default."""
    if threshold is None:
        return NEAR_DUPLICATE_THRESHOLD[modality]
    if not 0 < threshold <= 1:
        raise ConfigError(f"The near-duplicate threshold (`--threshold`) must be a cosine similarity in (0, 1]. "
                          f"Got {threshold} instead.")
    return float(threshold)


def parts_of(data: LabelledData) -> list[str | None]:
    """The predefined part (train, val, test) each sample of ``data`` is in; None without parts."""
    if not data.splits:
        return [None] * len(data)
    where = {item: name for name, part in data.splits.items() for item in part.items}
    return [where.get(item) for item in data.items]


def audit(data: LabelledData, *, model: str | None = None, against: LabelledData | None = None,
          weights: str | Path | None = None, threshold: float | None = None, folds: int = 5, seed: int = 0,
          cache_dir: str | Path | None = None, use_cache: bool = True, batch_size: int = 64,
          num_workers: int | None = None, device: str = "cpu", label_model: str | Transfer | None = None,
          progress: Progress | None = None) -> Audit:
    """Audit labelled ``data`` before training on it: exact and near-duplicate copies (and copy
    groups that cross classes), leakage between its train/val/test folders or into ``against``
    (held-out data), likely label errors (cleanlab on out-of-fold probabilities), outliers, class
    counts, and for texts empty, very short and over-long ones.

    Everything is computed from the features of backbone ``model`` (default: the modality's),
    read from the feature cache where a fit or an earlier audit left them. ``threshold``
    overrides the measured near-duplicate cosine threshold; ``folds`` and ``seed`` set the
    cross-validation of the label check. ``label_model`` (a strategy: ``lora``, ``finetune``, ...;
    or an unfitted :class:`~headstart.Transfer` with its own settings) is also fitted in each fold,
    and the label check reads the mean of its out-of-fold probabilities and the features' models'
    (:mod:`.fitted`): surer label issues, for one fit per fold.
    """
    threshold = near_duplicate_threshold(data.modality, threshold)
    if against is not None and against.modality != data.modality:
        raise DataError(f"{data.source} holds {data.modality} data but {against.source} holds {against.modality}; "
                        "audit against data of the same kind.")
    if len(data) < 2:
        raise DataError(f"{data.source} has {len(data)} readable sample(s); an audit needs at least 2.")
    name = model or default_backbone(data.modality)
    # the device is resolved, importing torch, only when a network runs: a warm audit runs none
    settings = {"cache_dir": cache_dir, "use_cache": use_cache, "batch_size": batch_size,
                "num_workers": default_workers(num_workers), "device": check_device_name(device)}
    network = None if label_model is None else label_estimator(label_model, model=name, seed=seed, weights=weights,
                                                                 settings=_resolved(settings))
    backbone = _OnFirstUse(name, weights)
    identity = feature_identity(name, weights) if use_cache else None
    started = time.perf_counter()
    digests = content_digests(data)  # read once: the cache lookup and the copy checks both need them
    other_digests = content_digests(against) if against is not None else None
    features = _features(data, digests, backbone, identity, settings, _stage(progress, "audit features"))
    other = (_features(against, other_digests, backbone, identity, settings, _stage(progress, "audit --against"))
             if against is not None else None)
    extracted = time.perf_counter()
    result = Audit(data.source, data.modality, name, len(data), data.class_counts(),
                   thresholds={"near_duplicate": threshold}, against=against.source if against is not None else None)
    contract = identity[1] if identity is not None else backbone().contract
    tokenizer = (lambda: backbone().tokenizer) if data.modality == "text" else None
    result.findings = _run_checks(data, features, against, other, result, folds, seed, network, progress,
                                  digests=(digests, other_digests), tokenizer=tokenizer,
                                  max_length=contract.max_length)
    result.seconds.update(features=round(extracted - started, 3), checks=round(time.perf_counter() - extracted, 3))
    if backbone.seconds is not None:  # part of the features' or the checks' time
        result.seconds["backbone"] = backbone.seconds
    return result


class _OnFirstUse:
    """The audit's backbone, built when first called for: features read from a warm cache need none."""

    def __init__(self, name: str, weights: str | Path | None) -> None:
        self.name, self.weights = name, weights
        self.seconds: float | None = None  # how long building took, once built
        self._built: Backbone | None = None

    def __call__(self) -> Backbone:
        if self._built is None:
            started = time.perf_counter()
            self._built = build_backbone(self.name, weights=self.weights)
            self.seconds = round(time.perf_counter() - started, 3)
        return self._built


def _features(data: LabelledData, digests: list[bytes], backbone: Callable[[], Backbone],
              identity: tuple[str, InputContract] | None, settings: dict,
              progress: Callable[[int, int], None] | None) -> np.ndarray:
    """``data``'s features: read from the cache without building the backbone when ``identity`` (its
    cache key and contract) finds all of them there, else extracted by the built backbone."""
    if identity is not None and identity[1].modality == data.modality:
        found = cached_features(identity[0], identity[1].feature_dim, data, settings["cache_dir"], digests)
        if found is not None:
            if progress:
                progress(len(data), len(data))
            return found
    return extract_features(backbone(), data, progress=progress, **_resolved(settings))


def _resolved(settings: dict) -> dict:
    """``settings`` with its device resolved (``auto`` -> cuda or cpu): torch is imported only here."""
    return {**settings, "device": resolve_device(settings["device"])}


def _stage(progress: Progress | None, stage: str):
    return (lambda done, total: progress(stage, done, total)) if progress else None


def _run_checks(data: LabelledData, features: np.ndarray, against: LabelledData | None, other: np.ndarray | None,
                result: Audit, folds: int, seed: int, network: Transfer | None, progress: Progress | None, *,
                digests: tuple[list[bytes], list[bytes] | None], tokenizer: Callable[[], Any] | None,
                max_length: int | None) -> list[Finding]:
    texts = data.items if data.modality == "text" else None
    parts, labels = parts_of(data), data.labels
    unit, (digests, other_digests) = unit_rows(features), digests
    threshold = result.thresholds["near_duplicate"]
    near = confirmed(similar_pairs(unit, threshold), data) + (one_word_apart(texts) if texts else [])
    if data.modality == "image":
        result.thresholds["pixel_agreement"] = AGREEMENT
    result.groups = copy_groups(digests, near, labels, data.locations, texts)
    findings = copy_findings(result.groups, labels, parts, texts) + leakage_findings(result.groups, labels, parts, texts)
    if against is not None:
        across = confirmed(pairs_between(unit, unit_rows(other), threshold), data, against)
        findings += against_findings(across, digests, other_digests, against.locations, labels,
                                     data.locations, texts, against.items if against.modality == "text" else None)
    findings += _label_issues(data, features, folds, seed, parts, texts, result, network, progress)
    y = data.y if labels is not None else None
    findings += outlier_findings(outlier_scores(unit, y), labels, data.locations, parts, texts)
    result.thresholds["outlier_fence_iqr"] = FENCE
    if texts:
        findings += text_findings(texts, data.locations, labels, parts, data.skipped, tokenizer, max_length)
    else:
        started = time.perf_counter()
        findings += property_findings(image_properties(data.items), labels, data.locations, parts)
        result.seconds["image_properties"] = round(time.perf_counter() - started, 3)
    return findings


# Below this out-of-fold agreement with the given labels the label flags come with a warning. Measured with 5 % of
# the labels flipped (bench/audit.py's injection, 3 seeds): flowers5 71 % agreement, 0.31 of the flags flipped;
# amazon 83 %, 0.54-0.64.
UNSURE_LABEL_MODEL = 0.8


def _label_issues(data: LabelledData, features: np.ndarray, folds: int, seed: int, parts: list[str | None],
                  texts: list[str] | None, result: Audit,
                  network: Transfer | None = None, progress: Progress | None = None) -> list[Finding]:
    """cleanlab's label issues, or a note saying why there are none to look for. ``network``: an
    unfitted Transfer whose out-of-fold probabilities (:func:`.fitted.fitted_probabilities`) are
    averaged with the features' models'."""
    if data.labels is None or len(data.classes) < 2:
        result.notes.append("No label check: the data has fewer than two classes.")
        return []
    y = data.y
    smallest = int(np.bincount(y, minlength=len(data.classes)).min())
    if smallest < 2 or folds < 2:
        result.notes.append(f"No label check: cross-validation needs at least 2 samples per class (the smallest "
                            f"class has {smallest}) and at least 2 folds.")
        return []
    used = min(folds, smallest)
    if used < folds:
        result.notes.append(f"Label check with {used} folds: the smallest class has {smallest} samples.")
    result.thresholds["label_folds"] = used
    probabilities = out_of_fold_probabilities(features, y, len(data.classes), folds=used, seed=seed, texts=texts)
    if network is not None:
        started = time.perf_counter()
        fitted = fitted_probabilities(data, network, folds=used, seed=seed,
                                      progress=_stage(progress, f"audit {network.strategy} folds"))
        probabilities = (probabilities + fitted) / 2
        result.thresholds["label_model"] = network.strategy
        result.seconds["label_model"] = round(time.perf_counter() - started, 3)
        backbone = network.model or "its default backbone"
        result.notes.append(f"Label issues from the features' models and {network.strategy} on {backbone}, fitted on "
                            f"each fold's other folds ({result.seconds['label_model']:.0f} s for {used} fits).")
    agreement = float(np.mean(probabilities.argmax(1) == y))
    if agreement < UNSURE_LABEL_MODEL:
        result.notes.append(
            f"The label check's out-of-fold models agree with {agreement:.0%} of the given labels: this unsure, most of "
            "its flags may be hard or ambiguous samples rather than wrong labels (with 5 % of flowers5's labels flipped "
            "they agreed with 71 %, and 3 flags in 10 were flipped labels). Look at them before `--drop label-issues`.")
    return label_issue_findings(y, probabilities, data.classes, data.locations, parts, texts)
