"""Before and after transfer: several strategies on the same split and budget, side by side."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from .data import LabelledData
from .errors import ConfigError, did_you_mean
from .strategies import STRATEGIES, FinetuneConfig, LinearProbeConfig
from .runs import write_text_atomic
from .transfer import Transfer

__all__ = ["compare_strategies", "write_comparison", "DEFAULT_COMPARISON"]

DEFAULT_COMPARISON = ("scratch", "linear-probe", "finetune", "lp-ft")


def compare_strategies(train: LabelledData, test: LabelledData, strategies: Sequence[str] = DEFAULT_COMPARISON, *,
                       model: str | None = None, finetune: FinetuneConfig | None = None,
                       probe: LinearProbeConfig | None = None, **transfer_options) -> list[dict]:
    """Fit each strategy on ``train`` and evaluate on ``test``; one row of metrics per strategy.

    Network strategies (scratch, finetune, lp-ft) share one :class:`FinetuneConfig`, so they
    get the same epochs and batch size: a fair "before vs after transfer" comparison.
    """
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ConfigError(f"Unknown strategy '{unknown[0]}'.{did_you_mean(unknown[0], STRATEGIES)} "
                          f"Choose from: {', '.join(STRATEGIES)}.")
    rows = []
    for strategy in strategies:
        config = probe if strategy == "linear-probe" else finetune
        fitted = Transfer(model, strategy, config=config, **transfer_options).fit(train)
        metrics = fitted.evaluate(test)
        rows.append({"strategy": strategy, "model": fitted.model_name_, "accuracy": metrics["accuracy"],
                     "f1": metrics["f1"], "precision": metrics["precision"], "recall": metrics["recall"],
                     "trainable_params": fitted.fit_info_["trainable_params"],
                     "train_seconds": fitted.fit_info_["train_seconds"], "metrics": metrics,
                     "history": fitted.history_})
    return rows


def write_comparison(path: str | Path, rows: list[dict], train: LabelledData, test: LabelledData,
                     data_summary: dict) -> Path:
    """Save a comparison's rows (metrics and histories included) as ``path/comparison.json``,
    atomically, so ``headstart report`` can draw it later."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    content = {"data": data_summary, "train": len(train), "test": len(test), "rows": rows}
    return write_text_atomic(path / "comparison.json", json.dumps(content, indent=1))
