"""Labelled samples: the one data type every other part of headstart consumes.

Image folders and text tables both become a :class:`LabelledData`, so splitting,
feature extraction and training never care where the samples came from.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import numpy as np

from headstart.data.splits import stratified_split
from headstart.errors import DataError
from headstart.imaging import DEFAULT_MAX_PIXELS

__all__ = ["DEFAULT_MAX_PIXELS", "DataIssue", "LabelledData", "canonical_number", "report_issues", "sorted_classes"]

logger = logging.getLogger(__name__)
# Skipped samples have a logger of their own: the CLI lists them itself (data.skipped) and silences it.
skipped_logger = logging.getLogger("headstart.data.skipped")

Modality = Literal["image", "text"]
_LISTED = 20  # how many problem locations a warning or error spells out
_NUMBER = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?")


@dataclass(frozen=True)
class DataIssue:
    """A sample that was dropped, and why, so the user can find and fix it."""

    location: str
    problem: str

    def __str__(self) -> str:
        return f"{self.location}: {self.problem}"


def canonical_number(name: str) -> str | None:
    """``name`` written the one way its number is ("07.50" -> "7.5", "+0" -> "0"), or None
    when it is not a plain decimal number; this lets "7" and "7.0" name one class."""
    match = _NUMBER.fullmatch(name.strip())
    if match is None or not (match[2] or match[3]):
        return None
    whole, fraction = match[2].lstrip("0") or "0", (match[3] or "").rstrip("0")
    digits = whole + (f".{fraction}" if fraction else "")
    return f"-{digits}" if match[1] == "-" and digits != "0" else digits


def sorted_classes(labels: Iterable[str]) -> list[str]:
    """Sort class names; all-number names sort numerically ("2" before "10", "1.5" before "2")."""
    names = set(labels)
    numbers = {name: canonical_number(name) for name in names}
    if names and None not in numbers.values():
        return sorted(names, key=lambda name: (Decimal(numbers[name]), name))
    return sorted(names)


def report_issues(issues: Sequence[DataIssue], source: str, what: str, strict: bool) -> None:
    """Warn once about dropped samples, or raise :class:`DataError` when ``strict``."""
    if not issues:
        return
    listed = "; ".join(str(issue) for issue in issues[:_LISTED])
    more = f"; and {len(issues) - _LISTED} more" if len(issues) > _LISTED else ""
    if strict:
        raise DataError(
            f"{source}: {len(issues)} unusable {what}: {listed}{more}. "
            "Fix or remove them, or load without `strict` to skip them."
        )
    skipped_logger.warning("%s: skipped %d unusable %s: %s%s", source, len(issues), what, listed, more)


def _check_shares(test: float, val: float) -> None:
    """Held-out shares, checked with the names a user gave them (``--test``, ``--val``)."""
    if not 0 < test < 1:
        raise DataError(f"The test share (`--test`, `test=`) must be between 0 and 1, e.g. 0.2. Got {test} instead.")
    if not 0 <= val < 1 or test + val >= 1:
        raise DataError(f"The validation share (`--val`, `val=`) must be at least 0 and leave data to train on: "
                        f"test {test} + val {val} must be below 1.")


class LabelledData:
    """A list of samples (image paths or texts) with optional labels. Immutable-ish.

    ``items`` are absolute image paths or the texts; ``labels`` the class name of each
    item (None when unlabelled); ``classes`` the class names in index order; ``locations``
    where each item came from ("path" or "file.csv:LINE"); ``skipped`` the samples dropped
    by validation; ``splits`` predefined parts ("train", "val", "test") of the source;
    ``label_reading`` how a reader turned raw labels into classes (see ``TextTable``), kept
    so a run can record it.
    """

    def __init__(
        self,
        modality: Modality,
        items: Sequence[str],
        labels: Sequence[str] | None = None,
        *,
        classes: Sequence[str] | None = None,
        locations: Sequence[str] | None = None,
        skipped: Sequence[DataIssue] = (),
        splits: dict[str, LabelledData] | None = None,
        source: str = "",
        label_reading: dict[str, Any] | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        if modality not in ("image", "text"):
            raise DataError(f"modality must be 'image' or 'text'. Got {modality!r} instead.")
        self.modality: Modality = modality
        self.items: list[str] = list(items)
        self.labels: list[str] | None = None if labels is None else [str(x) for x in labels]
        if self.labels is not None and len(self.labels) != len(self.items):
            raise DataError(f"{len(self.items)} items but {len(self.labels)} labels; "
                            "give one label per item.")
        if classes is None:
            classes = [] if self.labels is None else sorted_classes(self.labels)
        self.classes: list[str] = list(classes)
        self.locations: list[str] = list(self.items if locations is None else locations)
        if len(self.locations) != len(self.items):
            raise DataError(f"{len(self.items)} items but {len(self.locations)} locations.")
        self.skipped: list[DataIssue] = list(skipped)
        self.splits: dict[str, LabelledData] = dict(splits or {})
        self.source: str = source
        self.label_reading: dict[str, Any] | None = label_reading
        self.max_pixels = max_pixels  # the pixel cap the images were read with: loaders decode under the same

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        kind = f"{len(self.classes)} classes" if self.labels is not None else "unlabelled"
        return (f"LabelledData({self.modality}, {len(self)} samples, {kind}, "
                f"source={self.source!r})")

    @property
    def y(self) -> np.ndarray:
        """The int64 index in ``classes`` of each label, as models and metrics need it."""
        if self.labels is None:
            raise DataError(f"{self.source or 'this data'} has no labels; "
                            "load it with a label column or class folders.")
        index = {name: i for i, name in enumerate(self.classes)}
        return np.array([index[label] for label in self.labels], dtype=np.int64)

    def subset(self, indices: Iterable[int] | np.ndarray) -> LabelledData:
        """Return the samples at ``indices``, keeping the class list so indices stay valid."""
        if not isinstance(indices, np.ndarray):
            indices = list(indices)
        picked = np.asarray(indices, dtype=np.int64).ravel().tolist()
        return LabelledData(
            self.modality,
            [self.items[i] for i in picked],
            None if self.labels is None else [self.labels[i] for i in picked],
            classes=self.classes,
            locations=[self.locations[i] for i in picked],
            skipped=self.skipped,
            source=self.source,
            label_reading=self.label_reading,
            max_pixels=self.max_pixels,
        )

    def split(self, test: float = 0.2, val: float = 0.0,
              seed: int = 0) -> tuple[LabelledData, ...]:
        """Split into (train, test) or (train, val, test), stratified by class.

        When the source has predefined splits (train/ and test/ folders), those are
        returned as given and the fractions are ignored.
        """
        if self.splits:
            return self._predefined_split(want_val=val > 0)
        _check_shares(test, val)
        noun = "images" if self.modality == "image" else "samples"
        fractions = [val, test] if val > 0 else [test]
        parts = stratified_split(self.y, fractions, seed, class_names=self.classes, noun=noun)
        return tuple(self.subset(part) for part in parts)

    def _predefined_split(self, want_val: bool) -> tuple[LabelledData, ...]:
        names = ("train", "val", "test") if want_val else ("train", "test")
        have = [name for name in ("train", "val", "test") if name in self.splits]
        for name in names:
            if name not in self.splits:
                folders = " and ".join(f"{n}/" for n in have)
                raise DataError(
                    f"{self.source} has {folders} but no {name}/ folder; add it, "
                    f"or {'drop --val' if name == 'val' else 'move the folders into one tree'}."
                )
        if not want_val and "val" in self.splits:
            logger.info("%s: using predefined train/ and test/; val/ is not used", self.source)
        return tuple(self.splits[name] for name in names)

    def class_counts(self) -> dict[str, int]:
        """Count samples per class (in class order), to spot imbalance."""
        if self.labels is None:
            return {}
        counts = Counter(self.labels)
        return {name: counts.get(name, 0) for name in self.classes}

    def with_classes(self, classes: Sequence[str]) -> LabelledData:
        """Reindex to a model's class list, so ``y`` matches what the model predicts."""
        if self.labels is None:
            return self
        known = set(classes)
        for label, location in zip(self.labels, self.locations):
            if label not in known:
                raise DataError(
                    f"label '{label}' at {location} is not one of the model's classes: "
                    f"{', '.join(classes)}"
                )
        return LabelledData(
            self.modality, self.items, self.labels,
            classes=list(classes), locations=self.locations, skipped=self.skipped,
            splits={name: part.with_classes(classes) for name, part in self.splits.items()},
            source=self.source, label_reading=self.label_reading, max_pixels=self.max_pixels,
        )

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description of the data, for reports and the CLI."""
        return {
            "source": _absolute(self.source),
            "modality": self.modality,
            "samples": len(self),
            "classes": self.class_counts(),
            "skipped": [str(issue) for issue in self.skipped],
            **({"label_reading": self.label_reading} if self.label_reading is not None else {}),
        }


def _absolute(source: str) -> str:
    """A path as an absolute one, so what a run records still finds its data from another folder
    (export calibrates on the run's training images); other descriptions unchanged."""
    return os.path.abspath(source) if source and os.path.exists(source) else source
