"""An audit on disk: ``audit.json`` (every finding) and a self-contained ``report.html`` with its
Audit section, written to a hidden sibling folder and renamed into place."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError
from ..integrity import write_manifest
from .findings import Audit

__all__ = ["AUDIT_FILE", "write_audit"]

AUDIT_FILE = "audit.json"


def _check_target(path: Path, inputs: list[str]) -> None:
    """Only a new folder, an empty one or an earlier audit's is (re)placed, never one in the data."""
    target = path.resolve()
    for source in inputs:
        data = Path(source).resolve()
        if target == data or data in target.parents or target in data.parents:
            raise ConfigError(f"`--out {path}` would write inside the data {source} (or over it); give a folder "
                              "outside the data, e.g. `--out audits/NAME`.")
    if path.exists() and not (path.is_dir() and ((path / AUDIT_FILE).is_file() or not any(path.iterdir()))):
        what = "a file" if not path.is_dir() else "a folder that holds no audit"
        raise ConfigError(f"`--out {path}` is {what}; an audit replaces only an earlier audit's folder. "
                          "Give a new folder, e.g. `--out audits/NAME`.")


def write_audit(audit: Audit, out_dir: str | Path, title: str | None = None) -> Path:
    """Write ``out_dir/audit.json`` and ``out_dir/report.html`` (thumbnails or texts of the
    findings, surest first) and return ``out_dir``; an earlier audit there is replaced whole."""
    from ..report import write_report  # matplotlib and torch: only when an audit is written
    from ..runs import staged_folder

    path = Path(out_dir)
    _check_target(path, [source for source in (audit.source, audit.against) if source])
    with staged_folder(path, "the audit") as temp:
        (temp / AUDIT_FILE).write_text(json.dumps(audit.to_dict(), indent=1))
        write_report(temp, title or f"headstart audit: {Path(audit.source).name or audit.source}")
        write_manifest(temp)
    return path
