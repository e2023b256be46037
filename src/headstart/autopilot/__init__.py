"""``auto``: one call from labelled data to the best transferred model a time budget allows.

It audits the data, ranks the candidate backbones, fits linear probes of the best, trains the
network strategies the remaining time allows, searches the best one's settings with the time
left, averages the best few when that scores higher, chooses by validation (K-fold on small
data), refits the winner on the whole training split, evaluates it once on the test split and
saves the run with a leaderboard of every stage.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .budget import Budget, format_duration, parse_duration
from .run import AutoArgs, AutoResult, AutoRun, stage_title

__all__ = ["auto", "resume_auto", "AutoArgs", "AutoResult", "AutoRun", "stage_title", "Budget", "parse_duration",
           "format_duration"]


def auto(data: str | Path, out_dir: str | Path, *, budget: str | float = "20m", progress: Callable[..., None] | None = None,
         clock: Callable[[], float] = time.monotonic, **settings: Any) -> AutoResult:
    """The best model for ``data`` (an image folder or a text table) that ``budget`` allows ("20m",
    "1h", or minutes), saved as the run ``out_dir``; ``settings`` are :class:`AutoArgs` fields
    (``candidates``, ``test``, ``seed``, ``drop``, ``device``...)."""
    paths = {k: str(v) for k, v in settings.items() if k == "cache_dir" and v is not None}
    args = AutoArgs(data=str(data), out_dir=str(out_dir), budget=parse_duration(budget), **{**settings, **paths})
    return AutoRun(args, clock=clock).run(progress)


def resume_auto(out_dir: str | Path, *, progress: Callable[..., None] | None = None) -> AutoResult:
    """Continue an interrupted :func:`auto` job to ``out_dir``; stages already scored are not run again."""
    return AutoRun.resume(out_dir).run(progress)
