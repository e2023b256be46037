"""Classifier heads on frozen features, and their fast fit.

The linear probe is scikit-learn's multinomial logistic regression (L-BFGS on the full
batch), with its inverse regularisation C chosen on a validation split. The fitted model
is folded into one ``nn.Linear`` (feature standardisation included), so prediction and
later fine-tuning use an ordinary torch module.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.utils.class_weight import compute_class_weight
from torch import nn

__all__ = ["balanced_class_weights", "HeadFit", "MLPHead", "fit_linear_probe", "fit_mlp_head", "build_head"]

log = logging.getLogger(__name__)

DEFAULT_C_GRID = tuple(float(c) for c in np.logspace(-3, 2, 11))


@dataclass
class HeadFit:
    """A fitted head and how it was chosen."""

    head: nn.Module
    params: dict = field(default_factory=dict)  # what was selected (C, epochs, ...)
    val_accuracy: float | None = None
    search: list[dict] = field(default_factory=list)  # one row per candidate tried


class MLPHead(nn.Module):
    """Standardise, then one hidden layer with ReLU and dropout, then the classes."""

    def __init__(self, in_dim: int, n_classes: int, hidden: int = 512, dropout: float = 0.2) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("scale", torch.ones(in_dim))
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, n_classes))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net((features - self.mean) / self.scale)


def balanced_class_weights(y: np.ndarray, n_classes: int) -> list[float]:
    """scikit-learn's 'balanced' class weights; classes absent from ``y`` get weight 1."""
    weights = np.ones(n_classes)
    present = np.unique(y)
    weights[present] = compute_class_weight("balanced", classes=present, y=y)
    return weights.tolist()


def build_head(kind: str, in_dim: int, n_classes: int, **options) -> nn.Module:
    """An untrained head of the given kind, shaped like a fitted one (for loading weights)."""
    if kind == "linear":
        return nn.Linear(in_dim, n_classes)
    return MLPHead(in_dim, n_classes, **options)


def _standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(0)
    scale = x.std(0)
    scale[scale < 1e-8] = 1.0  # constant features stay as they are
    return mean, scale


def _logistic(c: float, class_weight: str | None, previous: LogisticRegression | None) -> LogisticRegression:
    model = LogisticRegression(C=c, max_iter=500, tol=1e-4, class_weight=class_weight, warm_start=True)
    if previous is not None:  # warm start along the path of C: each fit starts near its answer
        model.coef_, model.intercept_, model.classes_ = previous.coef_.copy(), previous.intercept_.copy(), previous.classes_
    return model


def _fold_into_linear(model: LogisticRegression, mean: np.ndarray, scale: np.ndarray, n_classes: int) -> nn.Linear:
    """One nn.Linear computing the same logits as standardise-then-logistic-regression."""
    coef, intercept = model.coef_, model.intercept_
    if n_classes == 2 and coef.shape[0] == 1:  # binary: sklearn keeps one row; softmax needs two
        coef = np.vstack([-coef / 2, coef / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    weight = coef / scale
    bias = intercept - weight @ mean
    linear = nn.Linear(weight.shape[1], n_classes)
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        linear.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    return linear


def fit_linear_probe(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                     n_classes: int, *, class_weight: str | None = None,
                     c_grid: tuple[float, ...] = DEFAULT_C_GRID, refit_on_all: bool = True) -> HeadFit:
    """Fit a multinomial logistic-regression head, choosing C on the validation split.

    Candidates go from strong to weak regularisation with warm starts. The best C (by
    validation accuracy, ties to the stronger regularisation) is refit on train + val
    when ``refit_on_all``, since a small data set should not waste its validation samples.
    """
    mean, scale = _standardiser(x_train)
    z_train, z_val = (x_train - mean) / scale, (x_val - mean) / scale
    search, previous, best = [], None, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for c in sorted(c_grid):
            model = _logistic(c, class_weight, previous).fit(z_train, y_train)
            accuracy = float((model.predict(z_val) == y_val).mean())
            search.append({"C": c, "val_accuracy": accuracy})
            if best is None or accuracy > best[1]:
                best = (c, accuracy, model)
            previous = model
        c, accuracy, model = best
        if refit_on_all:
            x_all, y_all = np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val])
            mean, scale = _standardiser(x_all)
            model = _logistic(c, class_weight, model).fit((x_all - mean) / scale, y_all)
    log.info("Linear probe: C=%.4g, validation accuracy %.4f", c, accuracy)
    return HeadFit(_fold_into_linear(model, mean, scale, n_classes), {"C": c}, accuracy, search)


def fit_mlp_head(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                 n_classes: int, *, class_weight: str | None = None, hidden: int = 512,
                 dropout: float = 0.2, lr: float = 1e-3, weight_decay: float = 1e-4,
                 max_epochs: int = 200, patience: int = 20, batch_size: int = 256, seed: int = 0) -> HeadFit:
    """Train an MLP head with AdamW and early stopping on validation loss; keep the best epoch."""
    generator = torch.Generator().manual_seed(seed)  # shuffling
    with torch.random.fork_rng(devices=[]):  # init and dropout from the seed; the caller's state untouched
        torch.manual_seed(seed)
        head = MLPHead(x_train.shape[1], n_classes, hidden, dropout)
        mean, scale = _standardiser(x_train)
        head.mean.copy_(torch.as_tensor(mean)), head.scale.copy_(torch.as_tensor(scale))
        weights = (torch.tensor(balanced_class_weights(y_train, n_classes), dtype=torch.float32)
                   if class_weight == "balanced" else None)
        loss_fn = nn.CrossEntropyLoss(weight=weights)
        optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
        xt, yt = torch.as_tensor(x_train), torch.as_tensor(y_train)
        xv, yv = torch.as_tensor(x_val), torch.as_tensor(y_val)
        best_loss, best_state, best_epoch, search = float("inf"), None, 0, []
        for epoch in range(max_epochs):
            head.train()
            for idx in torch.randperm(len(xt), generator=generator).split(batch_size):
                optimizer.zero_grad()
                loss_fn(head(xt[idx]), yt[idx]).backward()
                optimizer.step()
            head.eval()
            with torch.no_grad():
                logits = head(xv)
                val_loss = float(loss_fn(logits, yv))
                accuracy = float((logits.argmax(1) == yv).float().mean())
            search.append({"epoch": epoch + 1, "val_loss": val_loss, "val_accuracy": accuracy})
            if val_loss < best_loss:
                best_loss, best_epoch = val_loss, epoch + 1
                best_state = {k: v.clone() for k, v in head.state_dict().items()}
            elif epoch + 1 - best_epoch >= patience:
                break
    head.load_state_dict(best_state)
    best = search[best_epoch - 1]
    return HeadFit(head.eval(), {"epochs": best_epoch, "hidden": hidden, "dropout": dropout},
                   best["val_accuracy"], search)
