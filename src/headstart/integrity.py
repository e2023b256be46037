"""SHA-256 manifests: a folder headstart wrote records the digest of each file in it, so a
file changed afterwards (edited, truncated, swapped) is found on reading, by name.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .errors import DataError

__all__ = ["MANIFEST", "sha256_of", "write_manifest", "read_manifest", "read_manifest_document", "changed_files",
           "read_json"]

MANIFEST = "manifest.json"
_FORMAT = 1


def sha256_of(path: str | Path) -> str:
    """The hex SHA-256 of a file's bytes, read in blocks (weights files can be large)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def write_manifest(folder: str | Path, extra: dict | None = None) -> dict[str, str]:
    """Record the digest of every file directly in ``folder`` in its ``manifest.json``;
    ``extra`` adds entries beside the digests (e.g. where the folder came from)."""
    folder = Path(folder)
    digests = {p.name: sha256_of(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    document = {"format": _FORMAT, "sha256": digests, **(extra or {})}
    (folder / MANIFEST).write_text(json.dumps(document, indent=1))
    return digests


def read_manifest_document(folder: str | Path) -> dict | None:
    """The whole ``manifest.json`` (digests and what else was recorded), its digest table checked;
    None for a folder written before manifests existed."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    document = read_json(path, dict)
    digests = document.get("sha256")
    if not isinstance(digests, dict) or not all(isinstance(v, str) for v in digests.values()):
        raise DataError(f"{path} is not a headstart manifest (it has no `sha256` table of digests).")
    return document


def read_manifest(folder: str | Path) -> dict[str, str] | None:
    """The recorded digests, by file name; None for a folder written before manifests existed."""
    document = read_manifest_document(folder)
    return None if document is None else document["sha256"]


def changed_files(folder: str | Path, names: list[str], manifest: dict[str, str] | None) -> list[str]:
    """Which of ``names`` (files in ``folder``) differ from the manifest, or are missing from
    it; none when there is no manifest."""
    if manifest is None:
        return []
    folder = Path(folder)
    return [name for name in names if manifest.get(name) != sha256_of(folder / name)]


def read_json(path: str | Path, kind: type = object):
    """A JSON file headstart wrote, of the ``kind`` it must hold; anything else is a
    :class:`DataError` naming the file (a damaged file is never a traceback)."""
    path = Path(path)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise DataError(f"{path} is damaged or unreadable ({exc}).") from None
    if not isinstance(content, kind):
        raise DataError(f"{path} is damaged: it holds a {type(content).__name__}, not a {kind.__name__}.")
    return content
