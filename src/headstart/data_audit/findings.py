"""What an audit finds: one :class:`Finding` per flagged sample, gathered in an :class:`Audit`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["DROP_KINDS", "KINDS", "Audit", "Finding"]

# Every kind of finding, in the order a summary lists them, with what it means.
KINDS = {
    "duplicate": "exact copy (same bytes or text) of another sample",
    "near-duplicate": "a slightly changed copy: resized, re-encoded, cropped, re-coloured; texts: case, punctuation, a word",
    "leakage": "copy of a sample in a held-out part (val/ or test/ folder, or the --against data)",
    "label-issue": "the other samples' model says another class (cleanlab, out-of-fold)",
    "outlier": "far from every class in feature space",
    "empty-text": "text with nothing to read (skipped when the data was read)",
    "short-text": "text with fewer than 3 letters or digits",
    "long-text": "text longer than the backbone reads: the rest is cut off",
    "odd-size": "image far smaller or larger than the others (pixels)",
    "odd-shape": "image far wider or taller than the others: a centre crop loses much of it",
    "dark": "image too dark to show much",
    "light": "image washed out: nearly white",
    "blank": "image of nearly one colour",
}
# Kinds only one modality can have; a summary of the other leaves them out.
ONLY = {"text": ("empty-text", "short-text", "long-text"), "image": ("odd-size", "odd-shape", "dark", "light", "blank")}
# What `--drop` accepts, and the kinds of finding each removes.
DROP_KINDS = {"duplicates": ("duplicate", "near-duplicate"), "leakage": ("leakage",),
              "label-issues": ("label-issue",), "outliers": ("outlier",)}


@dataclass
class Finding:
    """One flagged sample. ``index`` is its position in the audited data (None for a sample the
    reader skipped); ``score`` in [0, 1], higher is surer; ``group`` joins copies of each other;
    ``suggested`` is the label the model prefers (label issues); ``split`` the part of the data
    the sample is in (train, val, test), where the data has parts; ``text`` the sample itself
    for text data."""

    kind: str
    index: int | None
    location: str
    score: float
    label: str | None = None
    group: int | None = None
    suggested: str | None = None
    split: str | None = None
    detail: str = ""
    text: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and v != ""}


@dataclass
class Audit:
    """The findings of :func:`~headstart.data_audit.audit` on one data set, and what they rest on.

    ``groups`` are the copy groups (id, kind, members' locations and labels, whether they
    cross classes, their similarity); ``classes`` the per-class counts; ``thresholds`` the
    values findings were cut at; ``seconds`` where the time went.
    """

    source: str
    modality: str
    model: str
    samples: int
    classes: dict[str, int]
    findings: list[Finding] = field(default_factory=list)
    groups: list[dict[str, Any]] = field(default_factory=list)
    thresholds: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    against: str | None = None

    def of_kind(self, *kinds: str) -> list[Finding]:
        """The findings of these kinds, surest first."""
        return sorted((f for f in self.findings if f.kind in kinds), key=lambda f: -f.score)

    def counts(self) -> dict[str, int]:
        """How many samples each kind of finding flags (every kind the modality can have, zero included)."""
        foreign = {kind for modality, kinds in ONLY.items() if modality != self.modality for kind in kinds}
        return {kind: sum(f.kind == kind for f in self.findings) for kind in KINDS if kind not in foreign}

    def imbalance(self) -> float | None:
        """The largest class's count over the smallest's (None without labels)."""
        counts = [c for c in self.classes.values()]
        return max(counts) / max(min(counts), 1) if counts else None

    def summary(self) -> dict[str, Any]:
        """Counts per kind, copy groups that cross classes, class counts and balance."""
        return {"source": self.source, "modality": self.modality, "model": self.model, "samples": self.samples,
                "counts": self.counts(), "cross_class_groups": sum(g["cross_class"] for g in self.groups),
                "classes": self.classes, "imbalance": self.imbalance()}

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready: the summary, each finding (surest first within each kind), the
        copy groups, thresholds, timings and notes."""
        ordered = [f.to_dict() for kind in KINDS for f in self.of_kind(kind)]
        return {**self.summary(), **({"against": self.against} if self.against else {}), "findings": ordered,
                "groups": self.groups, "thresholds": self.thresholds, "seconds": self.seconds, "notes": self.notes,
                "kinds": KINDS}
