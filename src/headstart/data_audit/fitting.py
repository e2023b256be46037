"""The audit in a fit: removing flagged samples on request, and the check that a fit's own
train/test split has no copy on both sides."""

from __future__ import annotations

import difflib
import logging
from pathlib import Path

from ..backbones import Backbone
from ..data import LabelledData
from ..errors import ConfigError
from ..features import cached_features, content_digests
from .checks import near_duplicate_threshold
from .copies import kept_member
from .findings import DROP_KINDS, Audit, Finding
from .pixels import confirmed
from .similarity import pairs_between, unit_rows

__all__ = ["check_drop_kinds", "drop_flagged", "split_leakage", "split_leakage_message", "warn_split_leakage"]

log = logging.getLogger(__name__)


def check_drop_kinds(kinds: list[str] | tuple[str, ...] | None) -> list[str]:
    """The kinds ``--drop`` names, checked against :data:`DROP_KINDS` (an unknown one is an error)."""
    kinds = list(kinds or [])
    for kind in kinds:
        if kind not in DROP_KINDS:
            close = difflib.get_close_matches(kind, list(DROP_KINDS), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"`--drop {kind}` is not a kind of finding to drop; choose from "
                              f"{', '.join(DROP_KINDS)} (comma-separated).{hint}")
    return kinds


COPIES = ("duplicate", "near-duplicate")


def _to_drop(audit: Audit, kinds: list[str]) -> dict[int, Finding]:
    """Index -> the finding it is dropped for; of each copy group one member is kept."""
    wanted = {kind for name in kinds for kind in DROP_KINDS[name]}
    reasons: dict[int, Finding] = {}
    for finding in audit.findings:
        if finding.index is not None and finding.kind in wanted and finding.kind not in COPIES:
            reasons.setdefault(finding.index, finding)
    if "duplicates" in kinds:
        copies = {(f.group, f.index): f for f in audit.findings if f.kind in COPIES}
        for group in audit.groups:
            keep = kept_member(group)
            for member in group["members"]:
                if member != keep:
                    reasons.setdefault(member, copies[(group["id"], member)])
    return reasons


def drop_flagged(data: LabelledData, audit: Audit, kinds: list[str]) -> tuple[LabelledData, list[dict]]:
    """``data`` without the samples ``audit`` flags as any of ``kinds`` (names of :data:`DROP_KINDS`),
    and one record per dropped sample (location, label, kind, score, detail). Of a copy group one
    member stays: the first with the group's most common label, none when two labels tie."""
    reasons = _to_drop(audit, check_drop_kinds(kinds))
    if not reasons:
        return data, []
    kept = [i for i in range(len(data)) if i not in reasons]
    dropped = {data.items[i] for i in reasons}
    slimmer = data.subset(kept)
    slimmer.splits = {name: part.subset([i for i, item in enumerate(part.items) if item not in dropped])
                      for name, part in data.splits.items()}
    records = [{"location": data.locations[i], "label": data.labels[i] if data.labels else None,
                "kind": why.kind, "score": round(why.score, 4), "why": why.detail}
               for i, why in sorted(reasons.items())]
    log.info("Dropped %d flagged samples of %s (%s)", len(records), data.source, ", ".join(kinds))
    return slimmer, records


def split_leakage(train: LabelledData, test: LabelledData, backbone: Backbone | None = None, *,
                  cache_dir: str | Path | None = None, threshold: float | None = None) -> dict:
    """How many test samples have a copy in train: exact (same content digest) always; near
    (features at or above the near-duplicate threshold) when ``backbone``'s features of both parts
    are all in the cache, as a fit on frozen features leaves them. ``checked`` says which."""
    train_digests, test_digests = content_digests(train), content_digests(test)
    known = set(train_digests)
    exact = [j for j, d in enumerate(test_digests) if d in known]
    result = {"checked": "digests", "exact": len(exact), "near": None,
              "examples": [test.locations[j] for j in exact[:5]]}
    if backbone is None:
        return result
    key, width = backbone.cache_key, backbone.contract.feature_dim
    x_train = cached_features(key, width, train, cache_dir, train_digests)
    x_test = cached_features(key, width, test, cache_dir, test_digests) if x_train is not None else None
    if x_test is None:
        return result
    limit = near_duplicate_threshold(test.modality, threshold)
    pairs = confirmed(pairs_between(unit_rows(x_train), unit_rows(x_test), limit), train, test)
    near = sorted({j for _, j, _ in pairs} | set(exact))
    return {"checked": "features", "exact": len(exact), "near": len(near), "threshold": limit,
            "examples": [test.locations[j] for j in near[:5]]}


def split_leakage_message(leakage: dict, test_size: int) -> str | None:
    """A warning for :func:`split_leakage`'s result, or None when no test sample has a copy in train."""
    count = leakage["near"] if leakage["near"] is not None else leakage["exact"]
    if not count:
        return None
    how = "an exact or near copy" if leakage["near"] is not None else "an exact copy (near copies were not checked: " \
        "the frozen backbone's features are not all cached)"
    return (f"{count} of {test_size} test samples have {how} in the training split, e.g. "
            f"{', '.join(leakage['examples'][:3])}; the test metrics are optimistic. "
            "`headstart audit DATA` lists them; `fit --drop duplicates` keeps one of each group.")


def warn_split_leakage(train: LabelledData, test: LabelledData, backbone: Backbone | None = None, *,
                       cache_dir: str | Path | None = None) -> dict:
    """:func:`split_leakage`, logged as a warning when any test sample has a copy in train."""
    leakage = split_leakage(train, test, backbone, cache_dir=cache_dir)
    message = split_leakage_message(leakage, len(test))
    if message:
        log.warning(message)
    return leakage
