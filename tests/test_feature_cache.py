"""The feature cache never serves a wrong feature and never fails a fit: damaged shards are
quarantined and recomputed, a damaged index is rebuilt, a cache that cannot be written is skipped,
and a lookup reads only the shards that hold the wanted samples."""

from __future__ import annotations

import errno
import hashlib
import logging
import multiprocessing
import os
import sqlite3
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file, save_file

import headstart.feature_cache as feature_cache
import headstart.features as features
from headstart.backbones import build_backbone
from headstart.data import ImageFolder
from headstart.feature_cache import index_name
from headstart.features import FeatureCache, extract_features

from helpers import TINY_TIMM, colour_folder, tiny_timm_weights

DIM = 8
PARTS = 25  # shards per writer: enough for the two to overlap


@pytest.fixture
def fitted(tmp_path, monkeypatch):
    """A data set, its backbone, its features (cache off) and a cache folder holding them in one shard."""
    data = ImageFolder(colour_folder(tmp_path / "imgs", per_class=2))
    backbone = build_backbone(f"timm:{TINY_TIMM}", weights=tiny_timm_weights(tmp_path))
    fresh = extract_features(backbone, data, use_cache=False, num_workers=0)
    cache = tmp_path / "cache"
    np.testing.assert_array_equal(extract_features(backbone, data, cache_dir=cache, num_workers=0), fresh)
    folder = cache / "features" / backbone.cache_key
    (shard,) = folder.glob("*.safetensors")
    embedded = []
    original = features.embed
    monkeypatch.setattr(features, "embed", lambda b, items, **kw: embedded.append(list(items)) or original(b, items, **kw))

    def run():
        embedded.clear()
        return extract_features(backbone, data, cache_dir=cache, num_workers=0)
    return dict(data=data, backbone=backbone, fresh=fresh, cache=cache, folder=folder, shard=shard,
                embedded=embedded, run=run)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def _checksum(digests: np.ndarray, feats: np.ndarray) -> str:
    return hashlib.sha256(digests.tobytes() + feats.tobytes()).hexdigest()


def _rewrite(path: Path, digests: np.ndarray, feats: np.ndarray, with_checksum: bool = True) -> None:
    """Replace a shard by one with a valid checksum over the given (maybe bad) content."""
    meta = {"sha256": _checksum(digests, feats), "dim": str(feats.shape[1])} if with_checksum else None
    save_file({"digests": digests, "features": feats}, str(path), metadata=meta)


def _overwrite_features(path: Path) -> None:
    """Keep the header, overwrite the feature bytes (the last tensor in the file) with other numbers."""
    raw = bytearray(path.read_bytes())
    header = 8 + struct.unpack("<Q", raw[:8])[0]
    rows = load_file(str(path))["digests"].shape[0]
    start = header + rows * 32  # digests first, then features (safetensors orders by name)
    raw[start:] = np.random.default_rng(0).normal(size=(len(raw) - start) // 4).astype(np.float32).tobytes()
    path.write_bytes(bytes(raw))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _drop_digests(path: Path) -> None:
    save_file({"features": load_file(str(path))["features"]}, str(path))


def _nan(path: Path) -> None:
    """NaN under a checksum that matches: no index to know better (it holds the shard's first checksum)."""
    t = load_file(str(path))
    t["features"][1, 2] = np.nan
    (path.parent / index_name()).unlink()
    _rewrite(path, t["digests"], t["features"])


def _short_features(path: Path) -> None:
    t = load_file(str(path))
    _rewrite(path, t["digests"], t["features"][:-1])


def _rewritten_header(path: Path) -> None:
    """Other numbers with a checksum to match: the index's copy of the checksum still tells."""
    t = load_file(str(path))
    _rewrite(path, t["digests"], t["features"] + 1)


def _legacy_wrong_dim(path: Path) -> None:
    """A shard from before the index, unknown to it, whose features are one column too wide."""
    t = load_file(str(path))
    wide = np.concatenate([t["features"], np.zeros((len(t["features"]), 1), np.float32)], axis=1)
    (path.parent / index_name()).unlink()
    _rewrite(path, t["digests"], wide, with_checksum=False)


DAMAGES = {"features overwritten, header kept": (_overwrite_features, "checksum mismatch"),
           "truncated": (_truncate, "unreadable"),
           "no digests tensor": (_drop_digests, "no digests tensor"),
           "NaN features": (_nan, "non-finite"),
           "content and checksum rewritten": (_rewritten_header, "checksum mismatch"),
           "fewer feature rows than digests": (_short_features, "row count mismatch"),
           "legacy shard of the wrong dim": (_legacy_wrong_dim, "the backbone gives")}


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=DAMAGES.keys())
def test_a_damaged_shard_is_reported_once_quarantined_and_recomputed(fitted, damage, caplog):
    harm, reason = damage
    harm(fitted["shard"])
    np.testing.assert_array_equal(fitted["run"](), fitted["fresh"])
    (warning,) = _warnings(caplog)
    assert fitted["shard"].name in warning and reason in warning
    assert fitted["embedded"] == [fitted["data"].items]
    assert (fitted["folder"] / "quarantine" / fitted["shard"].name).exists() and not fitted["shard"].exists()
    caplog.clear()
    np.testing.assert_array_equal(fitted["run"](), fitted["fresh"])  # the recomputed rows were stored again
    assert fitted["embedded"] == [] and _warnings(caplog) == []


@pytest.mark.parametrize("how", ["garbage", "pages overwritten"])
def test_a_corrupt_index_is_rebuilt_from_the_shards(fitted, how, caplog):
    index = fitted["folder"] / index_name()
    raw = index.read_bytes()
    index.write_bytes(b"garbage" * 1000 if how == "garbage" else raw[:100] + b"\xff" * (len(raw) - 100))
    np.testing.assert_array_equal(fitted["run"](), fitted["fresh"])
    (warning,) = _warnings(caplog)
    assert f"{index_name()} is damaged" in warning and "rebuilding" in warning
    assert fitted["embedded"] == []  # the shards were indexed again, nothing recomputed
    with sqlite3.connect(index) as db:
        assert db.execute("SELECT count(*) FROM entries").fetchone()[0] == len(fitted["data"])


def test_a_shard_from_before_the_index_is_indexed_once_and_read(fitted, caplog, monkeypatch):
    t = load_file(str(fitted["shard"]))
    (fitted["folder"] / index_name()).unlink()
    _rewrite(fitted["shard"], t["digests"], t["features"], with_checksum=False)  # the old format: no metadata
    np.testing.assert_array_equal(fitted["run"](), fitted["fresh"])
    assert fitted["embedded"] == [] and _warnings(caplog) == []
    with sqlite3.connect(fitted["folder"] / index_name()) as db:  # its content, as first verified, now guards it
        assert db.execute("SELECT sha256 FROM shards").fetchall() == [(_checksum(t["digests"], t["features"]),)]
    _overwrite_features(fitted["shard"])
    np.testing.assert_array_equal(fitted["run"](), fitted["fresh"])
    assert "checksum mismatch" in _warnings(caplog)[0]


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _eacces(*args, **kwargs):
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))


def _half_then_enospc(self, data):
    with open(self, "wb") as handle:
        handle.write(data[: len(data) // 2])
    _enospc()


@pytest.mark.parametrize("target", ["rename", "write"])
def test_a_full_disk_costs_one_warning_and_leaves_no_temporary_file(tmp_path, monkeypatch, caplog, target):
    data = ImageFolder(colour_folder(tmp_path / "imgs", per_class=2))
    backbone = build_backbone(f"timm:{TINY_TIMM}", weights=tiny_timm_weights(tmp_path))
    fresh = extract_features(backbone, data, use_cache=False, num_workers=0)
    if target == "rename":
        monkeypatch.setattr(os, "replace", _enospc)
    else:
        monkeypatch.setattr(Path, "write_bytes", _half_then_enospc)
    for _ in range(2):  # a second fit in the same process does not repeat the warning
        np.testing.assert_array_equal(extract_features(backbone, data, cache_dir=tmp_path / "cache", num_workers=0), fresh)
    (warning,) = _warnings(caplog)
    assert "is not writable (No space left on device); going on without caching" in warning
    assert [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file() and "index." not in p.name] == []


def test_sqlite_errors_cost_one_warning(tmp_path, monkeypatch, caplog):
    connect = sqlite3.connect

    def full(path, *args, **kwargs):
        if str(path) != ":memory:":
            raise sqlite3.OperationalError("database or disk is full")
        return connect(path, *args, **kwargs)
    monkeypatch.setattr(sqlite3, "connect", full)
    cache = FeatureCache(tmp_path / "cache", "k", DIM)
    cache.store([bytes(32)], np.ones((1, DIM), np.float32))
    assert cache.lookup([bytes(32)]) == {}
    (warning,) = _warnings(caplog)
    assert "not writable (database or disk is full)" in warning


def _files(root: Path) -> list[Path]:
    """What a cache holds, but SQLite's own side files (the log and shared memory of an open index)."""
    return sorted(p.relative_to(root) for p in root.rglob("*")
                  if not (p.name.startswith("index.") and not p.name.endswith(".sqlite")))


def test_a_read_only_cache_is_read_but_not_written(fitted, monkeypatch, caplog):
    before = _files(fitted["cache"])
    for path in [fitted["cache"], *fitted["cache"].rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        if os.geteuid() == 0:  # root ignores permissions: refuse writes as the file system would
            connect = sqlite3.connect
            monkeypatch.setattr(sqlite3, "connect", lambda path, *a, **k: connect(
                path if str(path) == ":memory:" else f"file:{path}?mode=ro", *a, **{**k, "uri": True}))
            monkeypatch.setattr(os, "replace", _eacces)
        Image.new("RGB", (40, 40), (255, 255, 0)).save(fitted["data"].items[0])  # one miss, which cannot be stored
        got = fitted["run"]()
    finally:
        for path in [fitted["cache"], *fitted["cache"].rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    np.testing.assert_array_equal(got[1:], fitted["fresh"][1:])
    assert fitted["embedded"] == [[fitted["data"].items[0]]]
    (warning,) = _warnings(caplog)
    assert "is not writable" in warning
    assert _files(fitted["cache"]) == before


def _rows(seed: int, n: int) -> tuple[list[bytes], np.ndarray]:
    digests = [hashlib.sha256(f"{seed}-{i}".encode()).digest() for i in range(n)]
    return digests, np.stack([np.frombuffer(d, np.uint8)[:DIM].astype(np.float32) for d in digests])


def test_a_lookup_reads_only_the_shards_holding_its_digests(tmp_path, monkeypatch):
    ours, ours_features = _rows(0, 50)
    FeatureCache(tmp_path, "k", DIM).store(ours, ours_features)
    for seed in range(1, 6):
        FeatureCache(tmp_path, "k", DIM).store(*_rows(seed, 50))
    opened = []
    safe_open = feature_cache.safe_open
    monkeypatch.setattr(feature_cache, "safe_open", lambda path, *a, **k: opened.append(path) or safe_open(path, *a, **k))
    cache = FeatureCache(tmp_path, "k", DIM)
    wanted = ours[10:20] + [bytes(32)]
    for _ in range(2):  # the second time from the rows alone, the shard having been verified
        found = cache.lookup(wanted)
        assert sorted(found) == list(range(10)) and all(np.array_equal(found[i], ours_features[10 + i]) for i in found)
    assert len(opened) == 2 and len(set(opened)) == 1
    assert len(list((tmp_path / "features" / "k").glob("*.safetensors"))) == 6


def test_duplicate_digests_in_one_lookup_share_one_entry(tmp_path):
    digests, feats = _rows(0, 3)
    FeatureCache(tmp_path, "k", DIM).store(digests, feats)
    found = FeatureCache(tmp_path, "k", DIM).lookup([digests[1], digests[0], digests[1]])
    assert np.array_equal(found[0], feats[1]) and np.array_equal(found[2], feats[1]) and np.array_equal(found[1], feats[0])


def _store_many(root: str, seed: int) -> None:
    for part in range(PARTS):  # the two writers' rows overlap: both store the digests of seed 99
        digests, feats = _rows(seed * 100 + part, 40)
        shared, shared_feats = _rows(99, 20)
        FeatureCache(Path(root), "k", DIM).store(digests + shared, np.concatenate([feats, shared_feats]))


def test_two_processes_storing_at_once_lose_nothing(tmp_path, caplog):
    context = multiprocessing.get_context("fork")  # the children need no fresh imports
    workers = [context.Process(target=_store_many, args=(str(tmp_path), seed)) for seed in (1, 2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    expected = [_rows(seed * 100 + part, 40) for seed in (1, 2) for part in range(PARTS)] + [_rows(99, 20)]
    digests = [d for rows, _ in expected for d in rows]
    found = FeatureCache(tmp_path, "k", DIM).lookup(digests)
    assert len(found) == len(digests) == 2 * PARTS * 40 + 20
    np.testing.assert_array_equal(np.stack([found[i] for i in range(len(digests))]),
                                  np.concatenate([f for _, f in expected]))
    assert _warnings(caplog) == [] and len(list((tmp_path / "features" / "k").glob("*.safetensors"))) == 2 * PARTS


def test_digests_sharing_an_index_key_cost_a_miss_never_a_wrong_row(tmp_path, monkeypatch):
    monkeypatch.setattr(feature_cache, "_key", lambda digest: 7)  # every digest collides
    digests, feats = _rows(0, 3)
    FeatureCache(tmp_path, "k", DIM).store(digests, feats)
    found = FeatureCache(tmp_path, "k", DIM).lookup(digests)
    assert list(found) == [2] and np.array_equal(found[2], feats[2])  # the entry written last


def test_a_temporary_file_left_by_a_killed_writer_is_swept_once_stale(tmp_path):
    folder = tmp_path / "features" / "k"
    folder.mkdir(parents=True)
    stale, fresh = folder / ".a.safetensors.tmp", folder / ".b.safetensors.tmp"  # fresh: a writer still at work
    for temp in (stale, fresh):
        temp.write_bytes(b"half a shard")
    os.utime(stale, (0, 0))
    FeatureCache(tmp_path, "k", DIM).lookup([bytes(32)])
    assert not stale.exists() and fresh.exists()


def test_machines_sharing_a_cache_folder_keep_their_own_index_and_read_each_others_shards(tmp_path, monkeypatch):
    """A shared filesystem: SQLite files are never shared between hosts, shards are."""
    rng = np.random.default_rng(0)
    digests = [bytes([i]) * 32 for i in range(6)]
    rows = rng.normal(size=(6, 4)).astype(np.float32)
    monkeypatch.setattr("socket.gethostname", lambda: "node-a")
    FeatureCache(tmp_path, "key", 4).store(digests[:3], rows[:3])
    monkeypatch.setattr("socket.gethostname", lambda: "node/b")  # an odd name is made a safe file name
    second = FeatureCache(tmp_path, "key", 4)
    second.store(digests[3:], rows[3:])
    found = second.lookup(digests)
    assert sorted(found) == list(range(6)) and np.array_equal(np.stack([found[i] for i in range(6)]), rows)
    monkeypatch.setattr("socket.gethostname", lambda: "node-a")
    assert sorted(FeatureCache(tmp_path, "key", 4).lookup(digests)) == list(range(6))  # adopts node b's shard
    assert sorted(p.name for p in (tmp_path / "features" / "key").glob("*.sqlite")) == \
        ["index.node-a.sqlite", "index.node_b.sqlite"]


def test_the_index_schema_is_tried_again_while_another_process_holds_the_index():
    """Two ranks opening a new index together: one met "database is locked" at once (no busy wait), cached
    nothing, and its samples were embedded again (tests/test_distributed.py failed 1 run in 3-10)."""
    from headstart.feature_cache import _apply_schema

    class Locked:
        def __init__(self, failures: int, message: str = "database is locked") -> None:
            self.calls, self.failures, self.message = 0, failures, message

        def executescript(self, script: str) -> None:
            self.calls += 1
            if self.calls <= self.failures:
                raise sqlite3.OperationalError(self.message)

    held = Locked(2)
    _apply_schema(held)
    assert held.calls == 3
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        _apply_schema(Locked(1, "disk I/O error"))  # any other failure is not waited out
