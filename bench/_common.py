"""Helpers shared by the benchmark scripts: options, machine facts, a plain-text table."""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
_LOAD_AT_START = os.getloadavg()[0]  # other work on the machine skews timings: say how much there was


def parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark has: --data, --threads, --json."""
    import torch

    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help="folder holding flowers5/ and sentiment/ (default: ../shared/data from the repo root)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(),
                   help="torch.set_num_threads, the same for every side measured (default: torch's own)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return p


def machine(threads: int) -> dict[str, Any]:
    """What the numbers depend on, printed with them."""
    import torch

    from headstart.devices import cpu_description

    return {"cpus": os.cpu_count(), "cpu": cpu_description(), "torch_threads": threads, "torch": torch.__version__,
            "python": platform.python_version(), "loadavg_1m_start": round(_LOAD_AT_START, 2),
            "loadavg_1m_end": round(os.getloadavg()[0], 2)}


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned first column, right-aligned others; floats with 3 significant decimals."""
    def cell(value: Any) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths)))
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def emit(as_json: bool, result: dict[str, Any], title: str, headers: Sequence[str],
         rows: Sequence[Sequence[Any]], notes: Sequence[str] = ()) -> None:
    """Print the result as JSON, or as a titled table followed by notes."""
    if as_json:
        print(json.dumps(result, indent=1))
        return
    print(title)
    print(table(headers, rows))
    for note in notes:
        print(note)
    facts = result.get("machine", {})
    print("machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()))


def quiet() -> None:
    """Keep library warnings and progress bars out of the benchmark output."""
    import logging
    import warnings

    logging.basicConfig(level=logging.ERROR)
    warnings.filterwarnings("ignore")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


class PhaseClock:
    """A Transfer ``progress`` callback that notes when each stage last reported.

    Features of a stage are done at its last report, so the time after the last
    feature stage is the head's fit.
    """

    def __init__(self) -> None:
        import time

        self._now = time.perf_counter
        self.start = self._now()
        self.last: dict[str, float] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        self.last[stage] = self._now()

    def features_done(self) -> float:
        """Seconds from start until the last feature stage finished (backbone build included)."""
        return max((t for s, t in self.last.items() if "features" in s), default=self.start) - self.start


def class_slices(data, per_class: int, test_per_class: int, seed: int):
    """A training slice of ``per_class`` samples of each class and a disjoint test slice of
    ``test_per_class`` of each, drawn from ``seed``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in range(len(data.classes)):
        members = rng.permutation(np.flatnonzero(data.y == label))
        train += members[:per_class].tolist()
        test += members[per_class:per_class + test_per_class].tolist()
    return data.subset(sorted(train)), data.subset(sorted(test))
