"""Cosine similarity in a backbone's feature space: similar pairs and the groups they join.

Features are power-normalised (the signed square root of each value) and L2-normalised
(:func:`unit_rows`): the square root, a habit of image retrieval, keeps a few large activations
from deciding the similarity alone, and made perturbed copies measurably closer to their
originals than raw or mean-centred features did (``bench/audit_threshold.py``). Pairs come
from blocks of rows at a time: memory grows with the block, not with the square of the data set.
"""

from __future__ import annotations

import numpy as np

__all__ = ["connected_groups", "pairs_between", "similar_pairs", "unit_rows"]

BLOCK = 1024  # rows per block of the similarity matrix


def unit_rows(features: np.ndarray) -> np.ndarray:
    """The signed square root of ``features``, each row scaled to length 1 (float32)."""
    x = np.asarray(features, dtype=np.float32)
    x = np.sign(x) * np.sqrt(np.abs(x))
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def similar_pairs(unit: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """Every pair (i < j, similarity) of rows of ``unit`` (see :func:`unit_rows`) at or above ``threshold``."""
    pairs: list[tuple[int, int, float]] = []
    for start in range(0, len(unit), BLOCK):
        block = unit[start:start + BLOCK] @ unit[start:].T  # rows against themselves and every later row
        for i, j in zip(*np.nonzero(block >= threshold)):
            if i < j:
                pairs.append((int(start + i), int(start + j), float(block[i, j])))
    return pairs


def pairs_between(a: np.ndarray, b: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """Pairs (row of ``a``, row of ``b``, similarity) at or above ``threshold``."""
    pairs = []
    for start in range(0, len(a), BLOCK):
        block = a[start:start + BLOCK] @ b.T
        pairs += [(int(start + i), int(j), float(block[i, j])) for i, j in zip(*np.nonzero(block >= threshold))]
    return pairs


def connected_groups(n: int, pairs: list[tuple[int, int, float]]) -> list[list[int]]:
    """Groups of rows joined by ``pairs`` (union-find), each sorted, in order of their first row;
    rows in no pair are in no group."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in pairs:
        a, b = root(i), root(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    members: dict[int, list[int]] = {}
    for i, j, _ in pairs:
        for row in (i, j):
            members.setdefault(root(row), [])
    for row in range(n):
        if root(row) in members:
            members[root(row)].append(row)
    return [sorted(set(group)) for _, group in sorted(members.items())]
