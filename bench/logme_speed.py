"""Time headstart's LogME against the plain re-decomposing version on backbone-sized features.

Usage: .venv/bin/python bench/logme_speed.py [--n 4000] [--d 1280] [--classes 10] [--json]
Goal: LogME well under 1 s on 4,000 x 1,280 features, and at most 0.2 x the naive time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from logme_reference import logme_naive  # noqa: E402

from headstart.transferability import logme  # noqa: E402


def structured_features(n: int, d: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class means plus noise, with a decaying spectrum like real backbone features."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    scale = 1.0 / np.sqrt(1.0 + np.arange(d) / 32.0)
    features = (rng.standard_normal((classes, d))[y] + rng.standard_normal((n, d))) * scale
    return features.astype(np.float32), y


def best_of(repeat: int, function, *args) -> tuple[float, float]:
    times, value = [], 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        value = function(*args)
        times.append(time.perf_counter() - start)
    return min(times), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--d", type=int, default=1280)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="fast version: best of this many runs")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args()
    features, y = structured_features(args.n, args.d, args.classes)
    fast_s, fast_value = best_of(args.repeat, logme, features, y)
    naive_s, naive_value = best_of(1, logme_naive, features, y)
    result = {"n": args.n, "d": args.d, "classes": args.classes, "logme_seconds": round(fast_s, 4),
              "naive_seconds": round(naive_s, 4), "ratio_fast_over_naive": round(fast_s / naive_s, 4),
              "logme": fast_value, "naive": naive_value, "abs_difference": abs(fast_value - naive_value)}
    if args.json:
        print(json.dumps(result))
        return
    print(f"features {args.n} x {args.d}, {args.classes} classes")
    print(f"logme       {fast_s:8.3f} s  (value {fast_value:.6f})")
    print(f"logme_naive {naive_s:8.3f} s  (value {naive_value:.6f})")
    print(f"ratio fast/naive {fast_s / naive_s:.3f}  |difference| {abs(fast_value - naive_value):.2e}")


if __name__ == "__main__":
    main()
