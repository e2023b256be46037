"""The on-disk feature cache: safetensors shards of (sample digest, feature vector) rows per
backbone, found through an SQLite index and verified when read.

A lookup costs the data set's size, not the cache's history: the index says which shards hold
the wanted digests and only those are read. Every shard carries a checksum; a damaged one is
reported once, moved to ``quarantine/`` and its samples recomputed, so the cache can cost time
but never correctness. Writing is optional: a full or read-only disk is one warning, and the
caller goes on without caching.

Several processes, on several machines, may use one cache folder at once (a distributed job on a
shared filesystem): shards have unique names and appear whole (written aside, then renamed), and
each machine keeps an index of its own (``index.<host>.sqlite``), since SQLite's locking cannot be
trusted across machines on a network filesystem. An index adopts the shards other machines wrote
when it is opened.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save

__all__ = ["FeatureCache"]

log = logging.getLogger(__name__)

_DIGEST_BYTES = 32
_CHECKSUM, _DIM = "sha256", "dim"  # shard metadata: SHA-256 of the digests then features bytes; feature dim
_QUARANTINE = "quarantine"
_STALE_SECONDS = 3600  # a temporary shard file this old belongs to no live writer
_CHUNK = 900  # digests per query: under SQLite's oldest limit of 999 parameters
_SCHEMA = """
PRAGMA journal_mode=WAL;
PRAGMA synchronous=NORMAL;
CREATE TABLE IF NOT EXISTS shards (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, sha256 TEXT);
CREATE TABLE IF NOT EXISTS entries (key INTEGER PRIMARY KEY, shard INTEGER NOT NULL, row INTEGER NOT NULL);
"""
_BUSY_SECONDS = 60  # how long a process waits for another's write to the index
_warned: set[tuple[str, str]] = set()  # (folder, kind): a broken cache is reported once per process


class _DamagedShard(Exception):
    """A shard that cannot be trusted; the message says why."""


def _warn_once(folder: Path, kind: str, message: str, *args: object) -> None:
    """Log ``message % (folder, *args)`` the first time only: a cache fault is news once, not every fit."""
    if (str(folder), kind) not in _warned:
        _warned.add((str(folder), kind))
        log.warning(message, folder, *args)


def _checksum(digests: np.ndarray, features: np.ndarray) -> str:
    """SHA-256 of the digests' bytes, then the features' bytes: what a shard's metadata records."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(digests))
    digest.update(np.ascontiguousarray(features))
    return digest.hexdigest()


def _check_layout(shard: Any, feature_dim: int | None) -> None:
    """Refuse a shard (an open ``safe_open`` handle) whose header does not describe N digests and
    N float32 rows of the right dim: checked on the header alone, before any data is read."""
    missing = {"digests", "features"} - set(shard.keys())
    if missing:
        raise _DamagedShard(f"no {' or '.join(sorted(missing))} tensor")
    digests, features = shard.get_slice("digests"), shard.get_slice("features")
    rows, shape = digests.get_shape(), features.get_shape()
    if digests.get_dtype() != "U8" or len(rows) != 2 or rows[1] != _DIGEST_BYTES:
        raise _DamagedShard(f"digests are {digests.get_dtype()} {rows}, not N x {_DIGEST_BYTES} bytes")
    if features.get_dtype() != "F32" or len(shape) != 2:
        raise _DamagedShard(f"features are {features.get_dtype()} {shape}, not an N x D float32 table")
    if rows[0] != shape[0]:
        raise _DamagedShard(f"row count mismatch: {rows[0]} digests, {shape[0]} feature rows")
    recorded = (shard.metadata() or {}).get(_DIM)
    if recorded is not None and recorded != str(shape[1]):
        raise _DamagedShard(f"feature dim {shape[1]}, its metadata says {recorded}")
    if feature_dim is not None and shape[1] != feature_dim:
        raise _DamagedShard(f"feature dim {shape[1]}, the backbone gives {feature_dim}")


def _read_shard(path: Path, feature_dim: int | None, names: tuple[str, ...],
                rows: slice = slice(None)) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The named tensors (``rows`` of them) and the metadata of a well-formed shard."""
    try:
        with safe_open(str(path), "np") as shard:
            _check_layout(shard, feature_dim)
            return {name: shard.get_slice(name)[rows] for name in names}, shard.metadata() or {}
    except _DamagedShard:
        raise
    except Exception as error:  # truncated, foreign, vanished: all mean "do not use it"
        raise _DamagedShard(f"unreadable: {error}") from error


def _verify(tensors: dict[str, np.ndarray], expected: str | None) -> str:
    """The shard's checksum, once its content matches ``expected`` (when known) and is finite."""
    checksum = _checksum(tensors["digests"], tensors["features"])
    if expected and checksum != expected:
        raise _DamagedShard("checksum mismatch: its bytes changed after it was written")
    if not np.isfinite(tensors["features"]).all():
        raise _DamagedShard("non-finite feature values (NaN or Inf)")
    return checksum


def index_name() -> str:
    """This machine's index file: one per host, so that no SQLite file is shared between machines."""
    host = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "localhost"
    return f"index.{host}.sqlite"


def _connect(path: Path | str) -> sqlite3.Connection:
    """Open (creating if need be) an index; WAL lets readers go on while another process writes."""
    connection = sqlite3.connect(path, timeout=_BUSY_SECONDS)  # other processes' writes are short
    try:
        _apply_schema(connection)
    except BaseException:
        connection.close()
        raise
    return connection


def _apply_schema(connection: sqlite3.Connection) -> None:
    """The schema script, tried again while another process holds the index: the script can meet "database is
    locked" at once, without SQLite's busy wait (seen when two ranks of one job opened a new index together:
    one rank's features went uncached and were embedded again)."""
    deadline = time.monotonic() + _BUSY_SECONDS
    while True:
        try:
            connection.executescript(_SCHEMA)
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _key(digest: bytes) -> int:
    """A digest's index key: its first 8 bytes, which keep the index small and fast. Two samples whose
    digests share them (odds ~1e-9 in a million) cost a miss, never a wrong row: rows are read with
    their full digest, and a row whose digest differs from the wanted one is not used."""
    return int.from_bytes(digest[:8], "little", signed=True)


def _is_corrupt(error: sqlite3.Error) -> bool:
    """Not a database or a malformed one (plain ``DatabaseError``), as opposed to locked, read-only, full."""
    return type(error) is sqlite3.DatabaseError


class _ShardIndex:
    """The SQLite table digest key -> (shard, row), so a lookup reads only the shards that hold its digests."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def names(self) -> set[str]:
        return {name for (name,) in self.connection.execute("SELECT name FROM shards")}

    def checksum(self, name: str) -> str | None:
        row = self.connection.execute("SELECT sha256 FROM shards WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def locate(self, digests: list[bytes]) -> dict[str, list[tuple[int, bytes]]]:
        """``{shard: [(row, digest), ...]}`` for the digests the index knows."""
        by_key: dict[int, list[bytes]] = {}
        for digest in digests:
            by_key.setdefault(_key(digest), []).append(digest)
        keys = list(by_key)
        hits: dict[str, list[tuple[int, bytes]]] = {}
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start:start + _CHUNK]
            query = ("SELECT shards.name, entries.row, entries.key FROM entries JOIN shards ON shards.id = "
                     f"entries.shard WHERE entries.key IN ({','.join('?' * len(chunk))})")
            for name, row, key in self.connection.execute(query, chunk):
                hits.setdefault(name, []).extend((row, digest) for digest in by_key[key])
        return hits

    def add(self, shards: list[tuple[str, np.ndarray, str | None]], replace: bool) -> None:
        """Index shards' rows (name, digests, checksum) in one transaction; ``replace`` lets them win over
        entries already there (a fresh shard), else those stay (shards adopted from before the index)."""
        verb = "REPLACE" if replace else "IGNORE"
        with self.connection:
            for name, digests, checksum in shards:
                self.connection.execute("INSERT OR IGNORE INTO shards (name, sha256) VALUES (?, ?)", (name, checksum))
                (shard,) = self.connection.execute("SELECT id FROM shards WHERE name = ?", (name,)).fetchone()
                self.connection.executemany(f"INSERT OR {verb} INTO entries VALUES (?, ?, ?)",
                                            ((_key(digest.tobytes()), shard, row) for row, digest in enumerate(digests)))

    def remember_checksum(self, name: str, checksum: str) -> None:
        """A shard from before checksums: what it held when first verified guards it from now on."""
        with self.connection:
            self.connection.execute("UPDATE shards SET sha256 = ? WHERE name = ? AND sha256 IS NULL", (checksum, name))

    def drop(self, name: str) -> None:
        with self.connection:
            self.connection.execute("DELETE FROM entries WHERE shard IN (SELECT id FROM shards WHERE name = ?)", (name,))
            self.connection.execute("DELETE FROM shards WHERE name = ?", (name,))


class FeatureCache:
    """Feature vectors of one backbone: checksummed safetensors shards and a SQLite index of them.

    ``<root>/features/<backbone_key>/`` holds ``<uuid>.safetensors`` shards (``digests`` N x 32
    bytes, ``features`` N x D float32; metadata ``sha256`` and ``dim``), ``index.<host>.sqlite`` (digest
    -> shard, row) and ``quarantine/`` for shards that failed a check. The cache is optional:
    whatever goes wrong with it costs recomputation and one warning, never a wrong feature or a
    failed fit. Shards are written under a temporary name and renamed, so none is ever half-written.
    """

    def __init__(self, root: Path, backbone_key: str, feature_dim: int | None = None) -> None:
        self.folder = Path(root) / "features" / backbone_key
        self.feature_dim = feature_dim
        self._index: _ShardIndex | None = None
        self._in_memory = False  # the index file cannot be used: one is built in memory from the shards
        self._writable = True
        self._verified: set[str] = set()  # shards this instance has read in full and found sound

    def close(self) -> None:
        """Close the index (a later lookup or store opens it again)."""
        if self._index is not None:
            self._index.connection.close()
            self._index = None

    def lookup(self, digests: list[bytes]) -> dict[int, np.ndarray]:
        """Return ``{position: features}`` for the digests already cached, from shards that pass every check."""
        wanted: dict[bytes, list[int]] = {}
        for position, digest in enumerate(digests):  # files with equal content share one entry
            wanted.setdefault(digest, []).append(position)
        if not wanted or not self.folder.is_dir():
            return {}
        try:
            return self._lookup(wanted)
        except sqlite3.Error as error:
            self._recover(error)
        try:
            return self._lookup(wanted)
        except sqlite3.Error as error:
            _warn_once(self.folder, "unreadable", "feature cache at %s cannot be read (%s); computing every feature",
                       error)
            return {}

    def store(self, digests: list[bytes], features: np.ndarray) -> None:
        """Write one shard with the given rows and index it; a failed write costs one warning, nothing more."""
        features = np.ascontiguousarray(features, dtype=np.float32)
        finite = np.isfinite(features).all(axis=1)  # a row with NaN would be refused at every read
        digests = [digest for digest, keep in zip(digests, finite) if keep]
        if not digests or not self._writable:
            return
        table = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(len(digests), _DIGEST_BYTES)
        features = features[finite]
        try:
            index = self._open_index()
            if self._writable:  # opening the index may have found the folder read-only
                checksum = _checksum(table, features)
                index.add([(self._write(table, features, checksum), table, checksum)], replace=True)
        except (OSError, sqlite3.Error) as error:
            self._unwritable(error)

    def _lookup(self, wanted: dict[bytes, list[int]]) -> dict[int, np.ndarray]:
        found: dict[int, np.ndarray] = {}
        index = self._open_index()
        for name, hits in sorted(index.locate(list(wanted)).items()):
            for digest, vector in self._fetch(index, name, hits).items():
                for position in wanted[digest]:
                    found[position] = vector
        return found

    def _open_index(self) -> _ShardIndex:
        """The index, with any shard it does not know yet added: one from before the index existed, or
        one whose writer died between writing it and indexing it."""
        if self._index is None:
            self._index = _ShardIndex(self._connect())
            self._sweep_temporaries()
            unknown = sorted({path.name for path in self.folder.glob("*.safetensors")} - self._index.names())
            self._index.add([shard for name in unknown if (shard := self._adopt(self._index, name))], replace=False)
        return self._index

    def _connect(self) -> sqlite3.Connection:
        if not self._in_memory:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                return _connect(self.folder / index_name())
            except (OSError, sqlite3.OperationalError) as error:  # read-only, full, locked for too long
                self._unwritable(error)
                self._in_memory = True
        return _connect(":memory:")

    def _recover(self, error: sqlite3.Error) -> None:
        """After an index failure: move a damaged index aside (it is rebuilt from the shards), else index in memory."""
        self.close()
        if _is_corrupt(error) and not self._in_memory:
            path = self.folder / index_name()
            _warn_once(path, "damaged", "feature cache index %s is damaged (%s); rebuilding it from the shards", error)
            try:
                self._move_aside(path)
                for suffix in ("-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
                return
            except OSError as move_error:
                error = move_error
        self._unwritable(error)
        self._in_memory = True

    def _adopt(self, index: _ShardIndex, name: str) -> tuple[str, np.ndarray, str | None] | None:
        """A shard's index row (name, digests, checksum), from its header and digests alone: its content is
        checked when it is first read. None for a shard whose header is wrong, now quarantined."""
        try:
            tensors, metadata = _read_shard(self.folder / name, self.feature_dim, ("digests",))
        except _DamagedShard as error:
            self._quarantine(index, name, str(error))
            return None
        return name, tensors["digests"], metadata.get(_CHECKSUM)

    def _fetch(self, index: _ShardIndex, name: str, hits: list[tuple[int, bytes]]) -> dict[bytes, np.ndarray]:
        """``{digest: features}`` for the index's hits in one shard: read in full and verified the first
        time this instance reads it, only the rows spanning the hits after that."""
        first = min(row for row, _ in hits) if name in self._verified else 0
        span = slice(first, max(row for row, _ in hits) + 1) if name in self._verified else slice(None)
        try:
            tensors, metadata = _read_shard(self.folder / name, self.feature_dim, ("digests", "features"), span)
            if name not in self._verified:
                known = index.checksum(name)  # the index's copy also guards against a rewritten header
                checksum = _verify(tensors, known or metadata.get(_CHECKSUM))
                self._verified.add(name)
                if known is None:
                    index.remember_checksum(name, checksum)
        except _DamagedShard as error:
            self._quarantine(index, name, str(error))
            return {}
        digests, features = tensors["digests"], tensors["features"]
        return {digest: features[row - first] for row, digest in hits  # an entry its shard contradicts is ignored
                if 0 <= row - first < len(digests) and digests[row - first].tobytes() == digest}

    def _quarantine(self, index: _ShardIndex, name: str, reason: str) -> None:
        """Move a failed shard aside (kept for inspection), forget its entries, and say so once."""
        path = self.folder / name
        try:
            where = f"moved it to {self._move_aside(path)}"
        except OSError as error:
            where = f"could not move it aside ({error.strerror or error})"
        _warn_once(path, "damaged", "feature cache shard %s is damaged (%s); %s, its samples are computed again",
                   reason, where)
        index.drop(name)

    def _move_aside(self, path: Path) -> Path:
        target = self.folder / _QUARANTINE / path.name
        target.parent.mkdir(exist_ok=True)
        os.replace(path, target)
        return target

    def _write(self, table: np.ndarray, features: np.ndarray, checksum: str) -> str:
        """Write a shard under a temporary name, then rename it; no failure leaves the temporary file."""
        name = f"{uuid.uuid4().hex}.safetensors"
        blob = save({"digests": table, "features": features},
                    metadata={_CHECKSUM: checksum, _DIM: str(features.shape[1])})
        temp = self.folder / f".{name}.tmp"  # not *.safetensors: never taken for a shard
        try:
            temp.write_bytes(blob)
            os.replace(temp, self.folder / name)
        finally:
            temp.unlink(missing_ok=True)
        return name

    def _sweep_temporaries(self) -> None:
        """Remove temporary files that a killed writer left (a ``finally`` cannot run on SIGKILL); an hour
        old at least, so that no writer still at work loses its file."""
        for temp in self.folder.glob(".*.safetensors.tmp"):
            try:
                if time.time() - temp.stat().st_mtime > _STALE_SECONDS:
                    temp.unlink()
            except OSError:  # gone already, or the folder is read-only: nothing to do either way
                pass

    def _unwritable(self, error: Exception) -> None:
        self._writable = False
        reason = getattr(error, "strerror", None) or str(error)
        _warn_once(self.folder, "unwritable", "feature cache at %s is not writable (%s); going on without caching",
                   reason)
