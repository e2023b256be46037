"""What ``auto`` can afford: stage costs from measured per-sample times, and the stages that fit.

Everything here is arithmetic on measured seconds, so the planner is tested without training:
a forward pass of one sample through each backbone is timed once (``Costs.forward``), and a
training step of one sample costs ``Costs.train_factor`` forward passes (timed on one batch at
the start, then what the last network stage measured).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["PROBE", "Costs", "Selection", "Stage", "row_key", "network_stage", "probe_seconds", "refit_seconds",
           "standard_error", "network_input_size", "NETWORK_STRATEGIES", "MIN_EPOCHS", "GOOD_EPOCHS", "MAX_EPOCHS",
           "SMALL_DATA", "FOLDS"]

PROBE = "linear-probe"  # the strategy of the probe stages: a head on each candidate's cached features
# Network strategies worth trying, most promising first (bench/README: fine-tuning leads on images,
# lp-ft and lora on text).
NETWORK_STRATEGIES = {"image": ("finetune", "lp-ft"), "text": ("lp-ft", "lora", "finetune")}
MIN_EPOCHS = 2  # fewer than this is not a fair try of a network strategy
GOOD_EPOCHS = 5  # fewer rarely lift a network past a probe on large data (flowers5: finetune 3 epochs 0.69, probe 0.74)
MAX_EPOCHS = 10
SMALL_DATA = 600  # training samples below which one validation split is noise: choose by K-fold
FOLDS = 5
SMALL_IMAGE_SIZE = 128  # the least size networks train at for smaller images (BiT-HyperRule's for small images)
OWN_SIZE_SHARE = 0.75  # the images' size is used when at most this share of the backbone's input (1.8x fewer pixels)
MAX_TRAIN_FACTOR = 60.0  # a training step in forward passes, at most (a text model's can be ~30)


@dataclass
class Costs:
    """Measured seconds per sample: a forward pass through each backbone (decoding included), and
    a training step in forward passes."""

    forward: dict[str, float] = field(default_factory=dict)
    train_factor: float = 3.0
    measured: bool = False

    def set_train_factor(self, factor: float) -> None:
        self.train_factor, self.measured = min(MAX_TRAIN_FACTOR, max(1.0, factor)), True

    def learn_training(self, model: str, history: list[dict], n_fit: int, n_val: int) -> None:
        """Correct ``train_factor`` from a network fit's epoch times (each: training + validation)."""
        if not history or n_fit == 0 or not self.forward.get(model):
            return
        epoch = sum(row["seconds"] for row in history) / len(history)
        forward = self.forward[model]
        self.set_train_factor((epoch - forward * n_val) / (forward * n_fit))


@dataclass
class Selection:
    """How candidates are scored on the training split: one validation share, or K folds."""

    samples: int
    val_fraction: float = 0.15
    folds: int | None = None

    @classmethod
    def for_size(cls, samples: int, val_fraction: float = 0.15) -> Selection:
        return cls(samples, val_fraction, FOLDS if samples < SMALL_DATA else None)

    @property
    def fits(self) -> int:
        return self.folds or 1

    @property
    def fit_samples(self) -> int:
        """Samples one selection fit trains on (a fold's training part, less its validation share)."""
        part = self.samples * (1 - 1 / self.folds) if self.folds else self.samples
        return int(part * (1 - self.val_fraction))

    @property
    def val_samples(self) -> int:
        part = self.samples * (1 - 1 / self.folds) if self.folds else self.samples
        return int(part * self.val_fraction)

    @property
    def scored_samples(self) -> int:
        """Samples a candidate's score is measured on: the validation share, or every sample out of fold."""
        return self.samples if self.folds else max(1, round(self.samples * self.val_fraction))

    @property
    def label(self) -> str:
        return f"{self.folds}-fold CV accuracy" if self.folds else f"accuracy on a {self.val_fraction:.0%} validation share"


@dataclass
class Stage:
    """One candidate to score: a backbone and a strategy, the epochs a network trains, the seconds planned."""

    model: str
    strategy: str
    epochs: int | None
    seconds: float
    probe: bool = False
    refit_seconds: float = 0.0  # of ``seconds``: the refit on the whole training split, if one is planned
    options: dict = field(default_factory=dict)  # the strategy's options a search chose (empty: its defaults)
    seed: int | None = None  # another seed for the training's randomness (None: the job's); the split stays

    @classmethod
    def probe_of(cls, model: str, seconds: float) -> Stage:
        """A linear probe of ``model``: a head on its cached features."""
        return cls(model, PROBE, None, seconds, probe=True)

    @property
    def key(self) -> str:
        """The stage among the others: strategy, searched or not, seed, backbone (as :func:`row_key` of its row)."""
        return _stage_key(self.strategy, bool(self.options), self.seed, self.model)

    @property
    def name(self) -> str:
        return self.key + (f" ({self.epochs} epochs)" if self.epochs else "")


def row_key(row: dict) -> str:
    """A stage's row among the others (see :attr:`Stage.key`)."""
    return _stage_key(row["strategy"], bool(row.get("options")), row.get("seed"), row["model"])


def _stage_key(strategy: str, searched: bool, seed: int | None, model: str) -> str:
    return f"{strategy}{' tuned' if searched else ''}{f' seed {seed}' if seed is not None else ''} {model}"


def standard_error(accuracy: float, samples: int) -> float:
    """The standard error of an accuracy measured on ``samples`` samples (binomial)."""
    return math.sqrt(max(accuracy * (1 - accuracy), 0.0) / max(samples, 1))


def network_input_size(image_side: float | None, input_size: int) -> int | None:
    """The input size network stages train at when the images are far smaller than the backbone's input:
    their median shorter side rounded up to a multiple of 32 and at least ``SMALL_IMAGE_SIZE``; None (the
    backbone's own) otherwise. Upscaled photos hold no detail the smaller input lacks, and a training step
    costs as many pixels as it sees: on flowers5's 128 px photos efficientnet_lite0 fine-tuned at 128 px
    scored 0.819 in 4 epochs against 0.816 in 7 epochs at 224 px, with steps 3.8x faster
    (bench/README.md, input_size.py). Below 128 px the pre-trained filters see too few pixels of an
    object to transfer well (Kolesnikov et al. 2020 train small images at 128 px), so smaller photos are
    upscaled to 128."""
    if not image_side:
        return None
    size = max(SMALL_IMAGE_SIZE, 32 * math.ceil(image_side / 32))
    return size if size <= OWN_SIZE_SHARE * input_size else None


def probe_seconds(costs: Costs, model: str, uncached: int) -> float:
    """A linear probe: a feature pass over the ``uncached`` samples of the training split (the cache
    holds the others; the head fits in seconds)."""
    return costs.forward[model] * uncached


def _epoch_seconds(costs: Costs, model: str, fit: int, val: int) -> float:
    return costs.forward[model] * (costs.train_factor * fit + val)


def refit_seconds(costs: Costs, model: str, selection: Selection, epochs: int) -> float:
    """Training ``epochs`` on the whole training split (its validation share then in-sample)."""
    return epochs * _epoch_seconds(costs, model, selection.samples, int(selection.samples * selection.val_fraction))


def network_stage(strategy: str, model: str, costs: Costs, selection: Selection, seconds: float,
                  max_epochs: int = MAX_EPOCHS, refit: bool = True) -> Stage | None:
    """The most epochs (up to ``max_epochs``) of ``strategy`` whose selection fits, the held-out
    folds' scoring and (with ``refit``) the refit on the whole training split together take at most
    ``seconds``; None when not even ``MIN_EPOCHS`` fit."""
    per_epoch = (selection.fits * _epoch_seconds(costs, model, selection.fit_samples, selection.val_samples)
                 + (refit_seconds(costs, model, selection, 1) if refit else 0.0))
    held_out = costs.forward[model] * selection.samples if selection.folds else 0.0
    epochs = min(max_epochs, int((seconds - held_out) // per_epoch)) if per_epoch > 0 else max_epochs
    if epochs < MIN_EPOCHS:
        return None
    refitting = refit_seconds(costs, model, selection, epochs) if refit else 0.0
    return Stage(model, strategy, epochs, epochs * per_epoch + held_out, refit_seconds=refitting)
