"""Feature-cache lookup time against the cache's history: one shard of the data set's features, then the
same plus 200 foreign shards (other data, same backbone key).

Both caches hold the data set's rows in one shard written by FeatureCache.store; the second also holds
`--foreign` shards of `--foreign-rows` random rows each. A cold lookup uses a fresh FeatureCache (so the
data set's shard is read and verified in full, as at the start of every fit); a warm one repeats the
lookup on the same instance (the shard is known good: only the rows spanning the hits are read). Also
timed: the first lookup on an unindexed cache of the same shards (the one-time migration of shards
written before the index existed) and, when git has it, the implementation before the index
(commit b4d4935), which reads every shard of the backbone. Best of `--repeats`, files in the page cache.
Goal: cold 200-foreign / 1-shard <= 1.5.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file

from _common import REPO, emit, machine
from headstart.features import FeatureCache

GOAL = 1.5
KEY = "bench-backbone"
OLD = "b4d4935"  # the last commit before the index: every lookup reads every shard


def rows(seed: int, n: int, dim: int) -> tuple[list[bytes], np.ndarray]:
    """n random sample digests and features: one 'data set'."""
    rng = np.random.default_rng(seed)
    return [rng.bytes(32) for _ in range(n)], rng.standard_normal((n, dim), dtype=np.float32)


def best_interleaved(repeats: int, calls: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Best time of each call over ``repeats`` rounds, the calls alternating within a round: a busy
    machine slows the sides alike rather than whichever happened to run during a burst."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def cold(cache_class: type, root: Path, digests: list[bytes], dim: int | None) -> dict[int, np.ndarray]:
    """One lookup by a fresh cache object, as extract_features does once per fit."""
    cache = cache_class(root, KEY, dim) if dim else cache_class(root, KEY)
    try:
        return cache.lookup(digests)
    finally:
        getattr(cache, "close", lambda: None)()


def old_cache_class(tmp: Path) -> type | None:
    """FeatureCache as of commit OLD, loaded from a temporary file; None where git or the old code is missing."""
    try:
        source = subprocess.run(["git", "show", f"{OLD}:src/headstart/features.py"], cwd=REPO, check=True,
                                capture_output=True, text=True).stdout
        path = tmp / "features_old.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location("headstart._features_old", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.FeatureCache
    except Exception as error:  # the old module may no longer import against today's package
        print(f"(old implementation not timed: {error})")
        return None


def build(tmp: Path, ours: tuple[list[bytes], np.ndarray], args: argparse.Namespace) -> dict[str, Path]:
    """The three caches: ours alone, ours among foreign shards, and the latter without an index (legacy)."""
    one, many, legacy = tmp / "one", tmp / "many", tmp / "legacy"
    FeatureCache(one, KEY, args.dim).store(*ours)
    shards = lambda root: set((root / "features" / KEY).glob("*.safetensors"))  # noqa: E731
    for seed in range(1, args.foreign + 1):
        FeatureCache(many, KEY, args.dim).store(*rows(seed, args.foreign_rows, args.dim))
        if seed == args.foreign // 2:  # ours in the middle of the history
            before = shards(many)
            FeatureCache(many, KEY, args.dim).store(*ours)
            (own,) = shards(many) - before
    (legacy / "features" / KEY).mkdir(parents=True)
    for shard in shards(many) - {own}:  # the same foreign files, unknown to any index
        os.link(shard, legacy / "features" / KEY / shard.name)
    table = np.frombuffer(b"".join(ours[0]), np.uint8).reshape(len(ours[0]), 32).copy()
    save_file({"digests": table, "features": ours[1]}, str(legacy / "features" / KEY / "old-format.safetensors"))
    return {"one": one, "many": many, "legacy": legacy}


def measure(caches: dict[str, Path], ours: tuple[list[bytes], np.ndarray], old: type | None,
            args: argparse.Namespace) -> dict[str, float]:
    digests, dim = ours[0], args.dim
    start = time.perf_counter()
    assert len(cold(FeatureCache, caches["legacy"], digests, dim)) == len(digests)
    result = {"legacy_first_lookup": time.perf_counter() - start}
    warm = {name: FeatureCache(caches[name], KEY, dim) for name in ("one", "many")}
    for name, cache in warm.items():
        found = cache.lookup(digests)  # the first lookup verifies the shard; the warm ones below need not
        assert len(found) == len(digests) and all(np.array_equal(found[i], ours[1][i]) for i in found)
    calls = {f"{name}_cold": (lambda root=caches[name]: cold(FeatureCache, root, digests, dim)) for name in warm}
    calls |= {f"{name}_warm": (lambda cache=cache: cache.lookup(digests)) for name, cache in warm.items()}
    calls["legacy_next_lookup"] = lambda: cold(FeatureCache, caches["legacy"], digests, dim)
    result |= best_interleaved(args.repeats, calls)
    if old:
        result |= best_interleaved(2, {f"{name}_old": (lambda root=caches[name]: cold(old, root, digests, None))
                                       for name in warm})
    for cache in warm.values():
        cache.close()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=2000, help="samples in the data set (default 2000)")
    p.add_argument("--dim", type=int, default=1280, help="feature dim (default 1280, efficientnet_lite0)")
    p.add_argument("--foreign", type=int, default=200, help="foreign shards in the long-history cache (default 200)")
    p.add_argument("--foreign-rows", type=int, default=2000, help="rows per foreign shard (default 2000)")
    p.add_argument("--repeats", type=int, default=10, help="best of this many lookups (default 10)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = p.parse_args()
    ours = rows(0, args.rows, args.dim)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        caches = build(Path(tmp), ours, args)
        built = time.perf_counter() - start
        t = measure(caches, ours, old_cache_class(Path(tmp)), args)
    ratio, warm_ratio = t["many_cold"] / t["one_cold"], t["many_warm"] / t["one_warm"]
    old = lambda key: f"{t[key]:.3f}" if key in t else "-"  # noqa: E731
    table_rows = [("data set's shard only", 1, t["one_cold"], t["one_warm"], old("one_old")),
                  (f"+ {args.foreign} foreign shards", args.foreign + 1, t["many_cold"], t["many_warm"], old("many_old")),
                  ("unindexed: first lookup (migration)", args.foreign + 1, t["legacy_first_lookup"], "-", "-"),
                  ("unindexed: next lookups", args.foreign + 1, t["legacy_next_lookup"], "-", "-")]
    result = {"benchmark": "cache_lookup", "machine": machine(torch.get_num_threads()), "rows": args.rows,
              "dim": args.dim, "foreign": args.foreign, "foreign_rows": args.foreign_rows, "build_seconds": built,
              **t, "ratio_cold": ratio, "ratio_warm": warm_ratio, "goal": GOAL, "passes": ratio <= GOAL}
    emit(args.json, result, f"FeatureCache.lookup of {args.rows} digests (dim {args.dim}), seconds, best of {args.repeats}",
         ("cache", "shards", "cold s", "warm s", f"old ({OLD}) s"), table_rows,
         [f"cold {args.foreign}-foreign / 1-shard: {ratio:.2f} (goal <= {GOAL:g}: {'pass' if ratio <= GOAL else 'FAIL'}); "
          f"warm: {warm_ratio:.2f}; building the caches took {built:.0f} s"])


if __name__ == "__main__":
    main()
