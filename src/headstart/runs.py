"""The run directory: config, labels, contract, metrics and weights, written atomically.

A run is first written to a hidden sibling folder and renamed into place in one step, so
an interrupted save never leaves a folder that looks complete; an older run at the same
path is replaced only once the new one is whole.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save, save_file

from .errors import ConfigError, DataError

__all__ = ["RunFiles", "write_run", "read_run", "weights_bytes", "write_text_atomic", "REQUIRED_FILES", "RUN_MARKER",
           "is_run", "check_output_dir"]

REQUIRED_FILES = ("config.yaml", "labels.json", "contract.json", "metrics.json", "model.safetensors")
RUN_MARKER = ".headstart-run"  # written into every run: only a folder holding it (or an older run) is replaced


def is_run(path: str | Path) -> bool:
    """Whether ``path`` is a run headstart wrote: its marker, or every file of a run from before the marker."""
    path = Path(path)
    return path.is_dir() and ((path / RUN_MARKER).is_file() or all((path / n).is_file() for n in REQUIRED_FILES))


def _replaceable(path: Path) -> bool:
    """A path a run may be written to: new, an empty folder, or a previous run."""
    return not path.exists() or (path.is_dir() and (is_run(path) or not any(path.iterdir())))


def check_output_dir(path: str | Path, inputs: Sequence[str | Path] = ()) -> None:
    """Refuse, before any work starts, an output that would destroy something: the current folder
    or one above it, the input data (or a folder inside it), a file, or a folder that is no run."""
    path = Path(path)
    target, here = path.resolve(), Path.cwd().resolve()
    if target == here or target in here.parents:
        raise ConfigError(f"`--out {path}` is the current folder or one above it; give a new folder for the run, "
                          "e.g. `--out runs/NAME`.")
    for source in inputs:
        data = Path(source).resolve()
        if target == data or target in data.parents or data in target.parents:
            raise ConfigError(f"`--out {path}` would overwrite the data {source} or write inside it; "
                              "give a folder outside the data.")
    if not _replaceable(path):
        count = sum(1 for _ in path.iterdir()) if path.is_dir() else 0
        what = "a file" if not path.is_dir() else f"a folder of {count} {'entry' if count == 1 else 'entries'} that is no run"
        raise ConfigError(f"`--out {path}` is {what}; headstart replaces only a previous run. Choose a new folder, "
                          "or move that one away.")


@dataclass
class RunFiles:
    """The content of a run directory, as Python objects."""

    config: dict
    labels: list[str]
    contract: dict
    metrics: dict
    tensors: dict[str, torch.Tensor]
    extra: dict[str, object] = field(default_factory=dict)  # more JSON files, e.g. {"ranking": [...]}


def write_run(path: str | Path, run: RunFiles) -> Path:
    """Write ``run`` to ``path`` atomically and return the path; only a previous run is replaced."""
    path = Path(path)
    if not _replaceable(path):
        check_output_dir(path)  # raises, saying what is there
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        (temp / "config.yaml").write_text(yaml.safe_dump(run.config, sort_keys=False))
        (temp / "labels.json").write_text(json.dumps(run.labels, indent=1))
        (temp / "contract.json").write_text(json.dumps(run.contract, indent=1))
        (temp / "metrics.json").write_text(json.dumps(run.metrics, indent=1))
        for name, content in run.extra.items():
            (temp / f"{name}.json").write_text(json.dumps(content, indent=1))
            if name == "history" and content:  # per-epoch metrics, also as a table for spreadsheets
                _write_csv(temp / "history.csv", content)
        save_file(_plain(run.tensors), str(temp / "model.safetensors"), metadata=_METADATA)
        (temp / RUN_MARKER).write_text("a headstart run: `headstart fit --out` may replace this folder\n")
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, old / "run")
            os.replace(temp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temp, path)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return path


_METADATA = {"format": "pt"}


def _plain(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def weights_bytes(tensors: dict[str, torch.Tensor]) -> int:
    """The size ``model.safetensors`` has when ``write_run`` stores ``tensors``."""
    return len(save(_plain(tensors), metadata=_METADATA))


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write one file through a temporary sibling and a rename: readers never see half of it."""
    path = Path(path)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temp, 0o644)  # mkstemp makes it private; a report or config is for sharing
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def _write_csv(path: Path, rows: list[dict]) -> None:
    """Columns are every key of any row, in order of appearance: a run resumed from an older
    checkpoint has epochs that lack newer columns, and those cells stay empty."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def read_run(path: str | Path) -> RunFiles:
    """Read a run directory, with a clear error when it is not a complete run."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path} is not a run directory (it does not exist). Create one with `headstart fit`.")
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise DataError(f"{path} is not a complete headstart run: missing {', '.join(missing)}.")
    return RunFiles(
        config=yaml.safe_load((path / "config.yaml").read_text()),
        labels=json.loads((path / "labels.json").read_text()),
        contract=json.loads((path / "contract.json").read_text()),
        metrics=json.loads((path / "metrics.json").read_text()),
        tensors=load_file(str(path / "model.safetensors")),
        extra={p.stem: json.loads(p.read_text()) for p in sorted(path.glob("*.json"))
               if p.name not in REQUIRED_FILES},
    )
