"""``auto``'s search stage: the best network strategy's settings, searched by ``tune`` in the time left.

The search runs Optuna's TPE sampler with per-epoch median pruning (``tuning.tune``) over the
strategy's default space, its epoch count pinned to the one the plan afforded, on the same
selection as every stage (the validation share, or the K folds), until its share of the time is
spent; each trial also stops with the clock. The best settings found are then scored as one more
stage, by the same accuracy as the others, so a search that found nothing better simply loses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from ..data import LabelledData
from ..training import TimeLimit
from ..tuning import TuneSettings, tune
from .plan import Selection

__all__ = ["search_settings", "MIN_TRIALS"]

MIN_TRIALS = 4  # fewer trials than this do not search: TPE starts from random draws
STARTUP_TRIALS = 2  # trials finished before the median pruner stops a worse one


def search_settings(strategy: str, model: str, train: LabelledData, selection: Selection, *, epochs: int,
                    seconds: float, seed: int, trials: int, transfer_options: dict[str, Any],
                    progress: Callable[..., None] | None = None) -> tuple[dict, int]:
    """The best options of ``strategy`` on ``model`` found in at most ``trials`` trials within ``seconds``
    (no trial starts after that; a trial running then stops after its epoch), and how many trials ran."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # progress says what its per-trial log lines would
    deadline = time.monotonic() + seconds
    settings = TuneSettings(trials=trials, cv=selection.folds, seed=seed, val_fraction=selection.val_fraction,
                            timeout=seconds, pruner_startup=STARTUP_TRIALS, study=f"auto-{strategy}")
    result = tune(train, strategy, model=model, settings=settings, space={"epochs": epochs},
                  transfer_options=transfer_options, progress=progress,
                  trial_callbacks=lambda trial, config: [TimeLimit(lambda: deadline - time.monotonic())])
    finished = [t for t in result.trials if t["state"] in ("COMPLETE", "PRUNED")]
    return asdict(result.best_config), len(finished)
