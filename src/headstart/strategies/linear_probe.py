"""Linear probe: a frozen backbone's cached features, and a new head fit on them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..errors import ConfigError
from ..heads import HeadFit, fit_linear_probe, fit_mlp_head

__all__ = ["LinearProbeConfig", "fit_linear_probe_strategy"]


@dataclass
class LinearProbeConfig:
    """Options of the ``linear-probe`` strategy."""

    head: Literal["linear", "mlp"] = field(default="linear", metadata={
        "help": "linear: logistic regression with C chosen on validation; mlp: one hidden layer with dropout"})
    class_weight: Literal["balanced"] | None = field(default=None, metadata={
        "help": "'balanced' weighs classes inversely to their frequency (for imbalanced data)"})
    hidden: int = field(default=512, metadata={"help": "hidden units of the mlp head"})
    dropout: float = field(default=0.2, metadata={"help": "dropout before the last layer of the mlp head"})
    C: float | None = field(default=None, metadata={
        "help": "inverse regularisation of the linear head; None chooses it on the validation split"})

    def __post_init__(self) -> None:
        if self.head not in ("linear", "mlp"):
            raise ConfigError(f"The 'head' option of linear-probe must be 'linear' or 'mlp'. Got {self.head!r} instead.")
        if self.class_weight not in (None, "balanced"):
            raise ConfigError("The 'class_weight' option of linear-probe must be 'balanced' or None. "
                              f"Got {self.class_weight!r} instead.")
        if self.hidden < 1:
            raise ConfigError(f"The 'hidden' option of linear-probe must be an int >= 1. Got {self.hidden} instead.")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"The 'dropout' option of linear-probe must be in [0, 1). Got {self.dropout} instead.")
        if self.C is not None and not self.C > 0:
            raise ConfigError(f"The 'C' option of linear-probe must be a float > 0 or None. Got {self.C} instead.")


def fit_linear_probe_strategy(config: LinearProbeConfig, x_train: np.ndarray, y_train: np.ndarray,
                              x_val: np.ndarray, y_val: np.ndarray, n_classes: int, seed: int,
                              refit_on_all: bool = True) -> HeadFit:
    """Fit the head the config asks for on frozen features.

    ``refit_on_all=False`` keeps the linear head fitted on ``x_train`` alone, so a search can
    score it on ``x_val`` honestly.
    """
    if config.head == "linear":
        grid = {"c_grid": (float(config.C),)} if config.C is not None else {}
        return fit_linear_probe(x_train, y_train, x_val, y_val, n_classes, class_weight=config.class_weight,
                                refit_on_all=refit_on_all, **grid)
    return fit_mlp_head(x_train, y_train, x_val, y_val, n_classes, class_weight=config.class_weight,
                        hidden=config.hidden, dropout=config.dropout, seed=seed)
