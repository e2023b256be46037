"""The report's pre-training section: the objective's loss per epoch and, when ``--eval`` gave labelled
data, the linear probe before and after pre-training (the transfer gain it bought), from ``pretraining.json``."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from html import escape

from matplotlib.figure import Figure

__all__ = ["loss_curve", "pretraining_section"]

TRAIN, VAL = "#1f77b4", "#d62728"


def loss_curve(curve: Sequence[dict], method: str) -> bytes:
    """The objective's training and validation loss per epoch, as PNG bytes."""
    fig = Figure(figsize=(6, 3.4))
    ax = fig.subplots()
    epochs = [row["epoch"] for row in curve]
    for key, colour, label in (("train_loss", TRAIN, "train"), ("val_loss", VAL, "validation")):
        if all(key in row for row in curve):
            ax.plot(epochs, [row[key] for row in curve], marker="o", color=colour, label=label)
    ax.set_title(f"{method} loss")
    ax.set_xlabel("epoch")
    ax.set_xticks(epochs)
    ax.grid(alpha=0.3)
    ax.legend()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _figure(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else escape(str(value))


def _probe(probe: dict) -> str:
    keys = ("accuracy", "balanced_accuracy", "f1")
    head = "".join(f"<th>{escape(h)}</th>" for h in ("backbone", *keys))
    rows = "".join(f"<tr><td>{name}</td>" + "".join(f"<td>{_figure(probe[side][k])}</td>" for k in keys) + "</tr>"
                   for name, side in (("before pre-training", "before"), ("after pre-training", "after")))
    return (f"<h3>Linear probe before and after</h3><p>On {escape(str(probe['data']))}: a linear probe trained on "
            f"{probe['train']} labelled samples, measured on {probe['test']} others, with the same split for both "
            f"backbones. Transfer gain: <b>{probe['gain_points']:+.1f}</b> accuracy points.</p>"
            f"<table><tr>{head}</tr>{rows}</table>")


def pretraining_section(document: dict) -> str:
    """The section's HTML (``<section id="pretraining">``): method, data, cost, curve, probe."""
    cost, data = document.get("cost") or {}, document.get("data") or {}
    options = ", ".join(f"{k}={v}" for k, v in (document.get("options") or {}).items())
    per_1000 = cost.get("seconds_per_1000_samples")
    body = (f"<p>Method <b>{escape(str(document.get('method')))}</b> on {escape(str(document.get('model')))}, "
            f"{data.get('samples', '?')} samples of {escape(str(data.get('source')))}; {escape(options)}.</p>"
            f"<p>{cost.get('seconds', '?')} s for {cost.get('samples_seen', '?')} samples seen"
            + (f" ({per_1000} s per 1,000 samples)" if per_1000 is not None else "") + ".</p>")
    curve = document.get("curve") or []
    if curve:
        png = base64.b64encode(loss_curve(curve, str(document.get("method")))).decode()
        body += f'<img class="plot" alt="pre-training loss" src="data:image/png;base64,{png}">'
    if document.get("probe"):
        body += _probe(document["probe"])
    else:
        body += ('<p class="muted">No linear probe: give labelled data with `--eval` to measure the transfer gain '
                 "pre-training bought.</p>")
    return f'<section id="pretraining"><h2>Pre-training</h2>{body}</section>'
