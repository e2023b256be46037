"""Plain LogME that re-decomposes A = alpha I + beta F^T F at every iteration.

It is the yardstick for ``headstart.transferability.logme``: the same fixed-point iteration
and stopping rule, written the obvious way (inverse and log-determinant of A per class per
iteration), so tests check the fast version against it and the bench times both.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["logme_naive"]


def logme_naive(features: np.ndarray, y: np.ndarray, tol: float = 1e-3, max_iter: int = 100) -> float:
    """Mean over classes of the maximised LogME evidence / N, computed directly from A."""
    f = np.asarray(features, dtype=np.float64)
    labels = np.unique(np.asarray(y), return_inverse=True)[1].reshape(-1)
    n, d = f.shape
    gram = f.T @ f
    eye = np.eye(d)
    evidences = []
    for c in range(int(labels.max()) + 1):
        target = (labels == c).astype(np.float64)
        fty = f.T @ target
        alpha, beta = 1.0, 1.0
        for _ in range(max_iter):
            a_inv = np.linalg.inv(alpha * eye + beta * gram)
            m = beta * a_inv @ fty
            gamma = d - alpha * np.trace(a_inv)
            new_alpha = gamma / float(m @ m)
            new_beta = (n - gamma) / float(np.sum((f @ m - target) ** 2))
            done = abs(new_alpha - alpha) <= tol * alpha and abs(new_beta - beta) <= tol * beta
            alpha, beta = new_alpha, new_beta
            if done:
                break
        a = alpha * eye + beta * gram
        m = beta * np.linalg.solve(a, fty)
        logdet = np.linalg.slogdet(a)[1]
        evidence = (n / 2 * math.log(beta) + d / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
                    - beta / 2 * float(np.sum((f @ m - target) ** 2)) - alpha / 2 * float(m @ m) - logdet / 2)
        evidences.append(evidence / n)
    return float(np.mean(evidences))
