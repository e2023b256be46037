"""Copies: exact duplicates (same content digest), near-duplicates (feature similarity at or above
a threshold; for texts also the same words once case and punctuation are ignored), copy groups
that cross classes, and copies that leak across the parts of the data."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from .findings import Finding
from .similarity import connected_groups

__all__ = [
    "PART_ORDER",
    "against_findings",
    "copy_findings",
    "copy_groups",
    "exact_pairs",
    "kept_member",
    "leakage_findings",
    "text_key",
    "text_words",
]

PART_ORDER = ("train", "val", "test")  # a copy across parts is flagged in the earliest part it is in
Pair = tuple[int, int, float]


_WORD = re.compile(r"\w+(?:['’]\w+)*")  # a contraction ("don't") is one word, as people count words


def text_words(text: str) -> list[str]:
    """The words of ``text``, lowercased, without punctuation (an apostrophe too, as :func:`text_key` drops
    it): "Don't buy it!!" -> ["dont", "buy", "it"]."""
    return [re.sub("['’]", "", word) for word in _WORD.findall(text.lower())]


def text_key(text: str) -> str:
    """What copies of a text share: its letters and digits, lowercased; case, punctuation and spacing
    ignored ("Great phone!!", "great-phone" and "greatphone" are one key)."""
    return "".join(re.findall(r"[^\W_]", text.lower()))


def exact_pairs(keys: Sequence[object]) -> list[Pair]:
    """Pairs (first, other, 1.0) of positions holding the same key (a digest or a :func:`text_key`); an
    empty key (a text without letters or digits, "!!!" or an emoji) pairs with nothing."""
    first: dict[object, int] = {}
    pairs = []
    for i, key in enumerate(keys):
        if not key:
            continue
        if key in first:
            pairs.append((first[key], i, 1.0))
        else:
            first[key] = i
    return pairs


def copy_groups(digests: Sequence[bytes], near: list[Pair], labels: Sequence[str] | None,
                locations: Sequence[str], texts: Sequence[str] | None = None) -> list[dict]:
    """Groups of samples that are copies of each other: "duplicate" when all share one digest,
    else "near-duplicate"; ``cross_class`` when they carry more than one label."""
    pairs = exact_pairs(digests) + near + (exact_pairs([text_key(t) for t in texts]) if texts else [])
    best: dict[int, float] = {}
    for i, j, similarity in pairs:
        for row in (i, j):
            best[row] = max(best.get(row, -1.0), min(similarity, 1.0))
    groups = []
    for number, members in enumerate(connected_groups(len(digests), pairs)):
        names = sorted({labels[m] for m in members}) if labels is not None else []
        groups.append({"id": number, "kind": "duplicate" if len({digests[m] for m in members}) == 1 else "near-duplicate",
                       "members": members, "locations": [locations[m] for m in members],
                       "labels": [labels[m] for m in members] if labels is not None else None,
                       "cross_class": len(names) > 1, "similarity": min(best[m] for m in members)})
    return groups


def copy_findings(groups: list[dict], labels: Sequence[str] | None, parts: Sequence[str | None],
                  texts: Sequence[str] | None) -> list[Finding]:
    """One finding per member of each copy group, naming the other members."""
    findings = []
    for group in groups:
        crossing = f"; the group carries the labels {', '.join(sorted(set(group['labels'])))}" if group["cross_class"] else ""
        for member, location in zip(group["members"], group["locations"]):
            others = [loc for loc in group["locations"] if loc != location][:3]
            more = len(group["members"]) - 1 - len(others)
            findings.append(Finding(
                group["kind"], member, location, group["similarity"], label=labels[member] if labels else None,
                group=group["id"], split=parts[member], text=texts[member] if texts else None,
                detail=f"copy of {', '.join(others)}{f' and {more} more' if more > 0 else ''}{crossing}"))
    return findings


def leakage_findings(groups: list[dict], labels: Sequence[str] | None, parts: Sequence[str | None],
                     texts: Sequence[str] | None) -> list[Finding]:
    """Copy groups that span parts of the data: each member in the group's earliest part is flagged,
    with the held-out copies it leaks to."""
    findings = []
    for group in groups:
        spans = {parts[m] for m in group["members"]}
        if None in spans or len(spans) < 2:
            continue
        earliest = min(spans, key=PART_ORDER.index)
        held_out = [loc for m, loc in zip(group["members"], group["locations"]) if parts[m] != earliest]
        for member, location in zip(group["members"], group["locations"]):
            if parts[member] == earliest:
                findings.append(Finding("leakage", member, location, group["similarity"],
                                        label=labels[member] if labels else None, group=group["id"],
                                        split=earliest, text=texts[member] if texts else None,
                                        detail=f"also held out as {', '.join(held_out[:3])}"))
    return findings


def against_findings(near: Sequence[tuple[int, int, float]], digests: Sequence[bytes],
                     other_digests: Sequence[bytes], other_locations: Sequence[str],
                     labels: Sequence[str] | None, locations: Sequence[str],
                     texts: Sequence[str] | None, other_texts: Sequence[str] | None) -> list[Finding]:
    """Samples with a copy in other data (``--against``): exact digests, ``near`` pairs (row here,
    row there, similarity), or for texts the same words."""
    matches: dict[int, tuple[int, float]] = {}
    keyed = {d: j for j, d in enumerate(other_digests)}
    if texts and other_texts:
        keyed.update({key: j for j, t in enumerate(other_texts) if (key := text_key(t))})
    for i, key in enumerate(digests):
        j = keyed.get(key)
        if j is None and texts and other_texts:
            j = keyed.get(text_key(texts[i]) or None)
        if j is not None:
            matches[i] = (j, 1.0)
    for i, j, similarity in near:
        if similarity > matches.get(i, (0, -1.0))[1]:
            matches[i] = (j, min(similarity, 1.0))
    return [Finding("leakage", i, locations[i], score, label=labels[i] if labels else None,
                    text=texts[i] if texts else None, detail=f"copy of {other_locations[j]} in the --against data")
            for i, (j, score) in sorted(matches.items())]


def kept_member(group: dict) -> int | None:
    """The member of a copy group to keep when dropping copies: the first with the group's most
    common label, or none when two labels are equally common (which one is right is unknown)."""
    if not group["labels"]:
        return group["members"][0]
    ranked = Counter(group["labels"]).most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return None
    return next(m for m, label in zip(group["members"], group["labels"]) if label == ranked[0][0])
