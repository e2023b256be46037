"""The report's plots, as PNG bytes.

Figures are built with ``matplotlib.figure.Figure`` and its Agg canvas directly, never
through pyplot: no global figure state, no display needed, safe in threads and servers.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = ["learning_curves", "confusion_heatmap", "per_class_bars", "comparison_bars", "optimisation_history",
           "param_importances"]

TRAIN, VAL, PRUNED = "#1f77b4", "#d62728", "#9a9a9a"


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def learning_curves(history: Sequence[dict]) -> bytes:
    """Loss, accuracy and macro F1 per epoch, training and validation side by side."""
    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(12, 3.4))
    panels = (("loss", "train_loss", "val_loss"), ("accuracy", "train_accuracy", "val_accuracy"),
              ("macro F1", "train_f1", "val_f1"))
    for ax, (title, train_key, val_key) in zip(fig.subplots(1, 3), panels):
        for key, colour, label in ((train_key, TRAIN, "train"), (val_key, VAL, "validation")):
            values = [row.get(key) for row in history]
            if all(v is not None for v in values):
                ax.plot(epochs, values, marker="o", color=colour, label=label)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
        ax.legend()
    return _png(fig)


def confusion_heatmap(classes: Sequence[str], matrix: Sequence[Sequence[int]]) -> bytes:
    """Counts of true (rows) against predicted (columns) classes, shaded by row share."""
    counts = np.asarray(matrix, dtype=float)
    shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    size = max(3.5, 0.6 * len(classes) + 2)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of the true class")
    ax.set_xticks(range(len(classes)), labels=classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), labels=classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(classes) <= 25:
        for i in range(len(classes)):
            for j in range(len(classes)):
                ax.text(j, i, int(counts[i, j]), ha="center", va="center",
                        color="white" if shares[i, j] > 0.5 else "black", fontsize=9)
    return _png(fig)


def per_class_bars(per_class: dict[str, dict]) -> bytes:
    """Precision, recall and F1 of each class as grouped bars."""
    names = list(per_class)
    x = np.arange(len(names))
    fig = Figure(figsize=(max(6, 0.9 * len(names) + 2), 3.6))
    ax = fig.subplots()
    for offset, (key, colour) in zip((-0.27, 0, 0.27), (("precision", "#1f77b4"), ("recall", "#ff7f0e"), ("f1", "#2ca02c"))):
        ax.bar(x + offset, [per_class[n][key] for n in names], width=0.27, color=colour, label=key)
    ax.set_xticks(x, labels=names, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower right")
    return _png(fig)


def comparison_bars(rows: Sequence[dict]) -> bytes:
    """Test accuracy and macro F1 of each strategy: before (scratch) against after transfer."""
    names = [row["strategy"] for row in rows]
    x = np.arange(len(names))
    fig = Figure(figsize=(max(6, 1.2 * len(names) + 2), 3.6))
    ax = fig.subplots()
    for offset, key, colour in ((-0.2, "accuracy", TRAIN), (0.2, "f1", VAL)):
        bars = ax.bar(x + offset, [row[key] for row in rows], width=0.4, color=colour, label=key)
        ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_xticks(x, labels=names)
    ax.set_ylim(0, 1.1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower right")
    return _png(fig)


def optimisation_history(trials: Sequence[dict]) -> bytes:
    """Each trial's objective (pruned trials at their last reported value) and the best so far."""
    fig = Figure(figsize=(8, 3.6))
    ax = fig.subplots()
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    pruned = [t for t in trials if t["state"] == "PRUNED" and t.get("intermediate")]
    ax.scatter([t["number"] for t in complete], [t["value"] for t in complete], color=TRAIN, label="complete", zorder=3)
    if pruned:
        ax.scatter([t["number"] for t in pruned], [list(t["intermediate"].values())[-1] for t in pruned],
                   color=PRUNED, marker="x", label="pruned (last report)", zorder=3)
    best, line = -np.inf, []
    for t in sorted(complete, key=lambda t: t["number"]):
        best = max(best, t["value"])
        line.append((t["number"], best))
    if line:
        ax.step(*zip(*line), where="post", color=VAL, label="best so far")
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("validation macro F1")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return _png(fig)


def param_importances(importances: dict[str, float]) -> bytes:
    """fANOVA importance of each searched parameter (share of the objective's variance)."""
    names = list(importances)[::-1]
    fig = Figure(figsize=(7, max(2.2, 0.45 * len(names) + 1)))
    ax = fig.subplots()
    bars = ax.barh(names, [importances[n] for n in names], color=TRAIN)
    ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_xlim(0, max(1.0, *importances.values()) * 1.1)
    ax.set_xlabel("importance")
    return _png(fig)
