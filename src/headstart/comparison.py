"""Before and after transfer: several strategies on the same split and budget, side by side."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from .adaptation import get_adaptation
from .config import Config
from .data import LabelledData
from .devices import resolve_device
from .peak_memory import PeakMemory
from .runs import weights_bytes, write_text_atomic
from .strategies import DEFAULT_COMPARISON, TrainingConfig, get_strategy
from .transfer import Transfer, clone

__all__ = ["compare_strategies", "compare_adaptation", "write_comparison", "DEFAULT_COMPARISON"]


def _config(strategy: str, budget: TrainingConfig | None, configs: Mapping[str, Config] | None) -> Config:
    """The strategy's own config if given, else its config for the shared budget."""
    if configs and configs.get(strategy) is not None:
        return configs[strategy]
    return get_strategy(strategy).config_for_budget(budget)


def _sizes(fitted: Transfer) -> dict:
    """Trainable and total parameters, and the bytes ``save`` would write for the weights."""
    total = fitted.strategy_.total_parameters()
    trainable = fitted.fit_info_["trainable_params"]
    return {"trainable_params": trainable, "total_params": total, "trainable_fraction": trainable / total,
            "checkpoint_bytes": weights_bytes(fitted.checkpoint_tensors())}


def compare_strategies(train: LabelledData, test: LabelledData, strategies: Sequence[str] = DEFAULT_COMPARISON, *,
                       model: str | None = None, finetune: TrainingConfig | None = None,
                       configs: Mapping[str, Config] | None = None, **transfer_options) -> list[dict]:
    """Fit each strategy on ``train`` and evaluate on ``test``; one row of metrics per strategy.

    Network strategies share the budget of ``finetune`` (epochs, batch size, schedule): a
    fair "before vs after transfer" comparison; those with a config of their own (lora,
    bitfit) take that budget with their own learning rate. ``configs`` gives any strategy
    its own config instead. Each row also holds the trainable parameters, the checkpoint
    size and the peak memory of the fit (see :class:`~headstart.peak_memory.PeakMemory`).
    """
    for strategy in strategies:
        get_strategy(strategy)  # an unknown name fails before any training
    device = resolve_device(transfer_options.get("device", "auto"))
    base, rows = Transfer(model, **transfer_options), []
    for strategy in strategies:
        with PeakMemory(device) as peak:
            fitted = clone(base, strategy=strategy, config=_config(strategy, finetune, configs)).fit(train)
        metrics = fitted.evaluate(test)
        rows.append({"strategy": strategy, "model": fitted.model_name_, "accuracy": metrics["accuracy"],
                     "f1": metrics["f1"], "precision": metrics["precision"], "recall": metrics["recall"],
                     **_sizes(fitted), "peak_memory_bytes": peak.bytes, "memory_method": peak.method,
                     "train_seconds": fitted.fit_info_["train_seconds"], "metrics": metrics,
                     "history": fitted.history_})
        del fitted
    return rows


def compare_adaptation(train: LabelledData, target: LabelledData, methods: Sequence[str], *,
                       evaluate_on: LabelledData, model: str | None = None, finetune: TrainingConfig | None = None,
                       configs: Mapping[str, Config] | None = None, adapt_options: dict[str, dict] | None = None,
                       **transfer_options) -> list[dict]:
    """Each domain-adaptation method beside the source-only model of its strategy, evaluated on ``evaluate_on``.

    Each method adapts its default strategy (coral and adabn a linear probe, dann and mmd
    fine-tuning with the ``finetune`` budget); the source-only row of each strategy is fitted
    once, with the same split and budget. Rows hold ``method``, ``strategy``, the metrics, each
    sample's ``predictions`` and the fitted ``transfer``.
    """
    adaptations = [get_adaptation(m)((adapt_options or {}).get(m)) for m in methods]
    base, rows, baselines = Transfer(model, **transfer_options), [], {}
    for adapt in adaptations:
        strategy = adapt.strategies[0]
        source_only = clone(base, strategy=strategy, config=_config(strategy, finetune, configs))
        adapted = clone(source_only, adapt=adapt).fit(train, target=target)
        if strategy not in baselines:
            baselines[strategy] = source_only.fit(train)
            rows.append(_adaptation_row("source-only", strategy, baselines[strategy], evaluate_on))
        rows.append(_adaptation_row(adapt.name, strategy, adapted, evaluate_on))
    return rows


def _adaptation_row(method: str, strategy: str, fitted: Transfer, data: LabelledData) -> dict:
    metrics, predictions = fitted.evaluate_with_predictions(data)
    return {"method": method, "strategy": strategy, "accuracy": metrics["accuracy"], "f1": metrics["f1"],
            "train_seconds": fitted.fit_info_["train_seconds"], "metrics": metrics, "predictions": predictions,
            "transfer": fitted}


def write_comparison(path: str | Path, rows: list[dict], train: LabelledData, test: LabelledData,
                     data_summary: dict) -> Path:
    """Save a comparison's rows (metrics and histories included) as ``path/comparison.json``,
    atomically, so ``headstart report`` can draw it later."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    content = {"data": data_summary, "train": len(train), "test": len(test), "rows": rows}
    return write_text_atomic(path / "comparison.json", json.dumps(content, indent=1))
