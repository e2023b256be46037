"""The run directory: config, labels, contract, metrics and weights, written atomically.

A run is first written to a hidden sibling folder and renamed into place in one step, so
an interrupted save never leaves a folder that looks complete; an older run at the same
path is replaced only once the new one is whole.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save, save_file

from .errors import ConfigError, DataError, OutputError, describe_os_error
from .integrity import MANIFEST, changed_files, read_json, read_manifest, write_manifest

__all__ = ["RunFiles", "write_run", "read_run", "weights_bytes", "write_text_atomic", "REQUIRED_FILES", "RUN_MARKER",
           "is_run", "check_output_dir", "shared_mode", "share", "place_folder", "staged_folder"]

REQUIRED_FILES = ("config.yaml", "labels.json", "contract.json", "metrics.json", "model.safetensors")
log = logging.getLogger(__name__)
ESSENTIAL_FILES = ("config.yaml", "labels.json", "contract.json", "model.safetensors")  # a model needs these; the rest is optional
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


def write_run(path: str | Path, run: RunFiles, finish: Callable[[Path], object] | None = None) -> Path:
    """Write ``run`` to ``path`` atomically and return the path; only a previous run is replaced.

    ``finish(folder)`` adds files (e.g. the report) to the run before it is renamed into place,
    so a failure there leaves the previous run as it was."""
    path = Path(path)
    if not _replaceable(path):
        check_output_dir(path)  # raises, saying what is there
    kept = lambda: " The previous run there is kept." if path.exists() else " Nothing was written."  # noqa: E731
    with staged_folder(path, "the run", (SafetensorError,), kept) as temp:
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
        if finish is not None:
            finish(temp)
        write_manifest(temp)
    return path


@contextmanager
def staged_folder(path: Path, what: str, errors: tuple[type[BaseException], ...] = (),
                  then: Callable[[], str] = lambda: "") -> Iterator[Path]:
    """A temporary sibling of ``path`` for the block to fill, renamed into place when the block ends
    (:func:`place_folder`). Any failure removes it; the machine's refusal (an OSError, or one of
    ``errors``) becomes one OutputError naming ``what`` and ``path``, followed by ``then()``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    except OSError as exc:
        raise OutputError(f"Cannot write {what} {path}: {describe_os_error(exc)}.") from None
    try:
        yield temp
        place_folder(temp, path)
    except (OSError, *errors) as exc:
        shutil.rmtree(temp, ignore_errors=True)
        raise OutputError(f"Cannot write {what} {path}: {describe_os_error(exc)}.{then()}") from None
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def place_folder(temp: Path, path: Path) -> None:
    """Rename a finished folder (made by ``mkdtemp`` beside ``path``) into place with the modes the
    umask asks for; a previous folder at ``path`` is replaced only now, in two renames."""
    share(temp)
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
        os.replace(path, old / "previous")
        os.replace(temp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(temp, path)


_METADATA = {"format": "pt"}


def _plain(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def weights_bytes(tensors: dict[str, torch.Tensor]) -> int:
    """The size ``model.safetensors`` has when ``write_run`` stores ``tensors``."""
    return len(save(_plain(tensors), metadata=_METADATA))


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write one file through a temporary sibling and a rename: readers never see half of it."""
    path = Path(path)
    try:
        handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"Cannot write {path}: {describe_os_error(exc)}.") from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temp, shared_mode(file=True))  # mkstemp makes it private; a report or config is for sharing
        os.replace(temp, path)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise OutputError(f"Cannot write {path}: {describe_os_error(exc)}.") from None
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
    """Read a run directory, with a clear error when it is incomplete, damaged or changed since it
    was written (its ``manifest.json`` digests); a damaged optional file (metrics, predictions,
    history) is skipped with a warning and never blocks using the model."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path} is not a run directory (it does not exist). Create one with `headstart fit`.")
    missing = [name for name in ESSENTIAL_FILES if not (path / name).is_file()]
    if missing:
        from .runtime import is_bundle  # only on this error path: it imports ONNX Runtime

        if is_bundle(path):
            raise DataError(f"{path} is a bundle `headstart export` wrote, not a run: `headstart predict`, `evaluate` "
                            "and `serve` take it, and in Python `headstart.runtime.Bundle.load` opens it.")
        raise DataError(f"{path} is not a complete headstart run: missing {', '.join(missing)}.")
    manifest = read_manifest(path)
    changed = changed_files(path, list(ESSENTIAL_FILES), manifest)
    if changed:
        raise DataError(f"{path}: {', '.join(changed)} changed after the run was written (the SHA-256 in "
                        f"{MANIFEST} no longer matches); restore the original, or fit the run again.")
    optional = _optional_documents(path, manifest)
    return RunFiles(config=_read_config(path / "config.yaml"), labels=_read_labels(path / "labels.json"),
                    contract=read_json(path / "contract.json", dict), metrics=optional.pop("metrics", {}),
                    tensors=_read_weights(path / "model.safetensors"), extra=optional)


def _read_config(file: Path) -> dict:
    try:
        config = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DataError(f"{file} is damaged: not valid YAML ({' '.join(str(exc).split())}).") from None
    if not isinstance(config, dict):
        raise DataError(f"{file} is damaged: it holds no mapping of settings.")
    return config


def _read_labels(file: Path) -> list[str]:
    labels = read_json(file, list)
    if not all(isinstance(label, str) for label in labels) or len(set(labels)) != len(labels):
        raise DataError(f"{file} is damaged: it must list each class name once, as strings.")
    return labels


def _read_weights(file: Path) -> dict[str, torch.Tensor]:
    """The tensors of ``model.safetensors``; unreadable bytes or a NaN/infinite weight is an error."""
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"{file} is damaged: not a readable safetensors file ({exc}). Fit the run again.") from None
    broken = [name for name, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if broken:
        raise DataError(f"{file} holds NaN or infinite weights (in {', '.join(broken[:3])}); the model is "
                        "unusable. Fit the run again.")
    return tensors


def _optional_documents(path: Path, manifest: dict[str, str] | None) -> dict[str, object]:
    """The run's other JSON files by name; a changed or unreadable one is left out with a warning."""
    documents: dict[str, object] = {}
    for file in sorted(path.glob("*.json")):
        if file.name in ESSENTIAL_FILES or file.name == MANIFEST:
            continue
        try:
            if changed_files(path, [file.name], manifest):
                raise DataError(f"{file} changed after the run was written")
            documents[file.stem] = read_json(file, object)
        except DataError as exc:
            log.warning("Ignoring %s: %s", file.name, exc)
    return documents


def current_umask() -> int:
    """The process's umask, read without changing it (os.umask can only set it)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def shared_mode(file: bool) -> int:
    """The mode a plain ``open``/``mkdir`` would give under the user's umask (temp files are private)."""
    return (0o666 if file else 0o777) & ~current_umask()


def share(folder: Path) -> None:
    """Give a folder made by ``mkdtemp``, and the files in it, the modes the umask asks for."""
    os.chmod(folder, shared_mode(file=False))
    for child in folder.iterdir():
        os.chmod(child, shared_mode(file=not child.is_dir()))
