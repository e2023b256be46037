"""Before and after transfer: several strategies on the same split and budget, side by side."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from .data import LabelledData
from .errors import ConfigError, did_you_mean
from .peak_memory import PeakMemory
from .runs import weights_bytes, write_text_atomic
from .strategies import PEFT_STRATEGIES, STRATEGIES, BitFitConfig, FinetuneConfig, LinearProbeConfig, LoraConfig
from .transfer import Transfer, resolve_device

__all__ = ["compare_strategies", "compare_adaptation", "write_comparison", "DEFAULT_COMPARISON"]

DEFAULT_COMPARISON = ("scratch", "linear-probe", "finetune", "lp-ft")
# What lora and bitfit take from the finetune config: the budget, not the learning rate
# (each has its own default, higher than full fine-tuning's).
_BUDGET = ("epochs", "batch_size", "patience", "warmup_epochs", "clip_norm", "dropout", "label_smoothing",
           "weight_decay", "head_lr_scale", "min_crop", "randaugment", "class_weight")


def _config(strategy: str, finetune: FinetuneConfig | None, probe: LinearProbeConfig | None,
            own: dict[str, LoraConfig | BitFitConfig | None]):
    if strategy == "linear-probe":
        return probe
    if strategy not in PEFT_STRATEGIES:
        return finetune
    if own.get(strategy) is not None or finetune is None:
        return own.get(strategy)
    config_class = STRATEGIES[strategy]
    names = {f.name for f in fields(config_class)}
    return config_class(**{k: getattr(finetune, k) for k in _BUDGET if k in names})


def _sizes(fitted: Transfer) -> dict:
    """Trainable and total parameters, and the bytes ``save`` would write for the weights."""
    modules = [fitted.net_] if hasattr(fitted, "net_") else [fitted.backbone_.module, fitted.head_]
    total = sum(p.numel() for module in modules for p in module.parameters())
    trainable = fitted.fit_info_["trainable_params"]
    return {"trainable_params": trainable, "total_params": total, "trainable_fraction": trainable / total,
            "checkpoint_bytes": weights_bytes(fitted.checkpoint_tensors())}


def compare_strategies(train: LabelledData, test: LabelledData, strategies: Sequence[str] = DEFAULT_COMPARISON, *,
                       model: str | None = None, finetune: FinetuneConfig | None = None,
                       probe: LinearProbeConfig | None = None, lora: LoraConfig | None = None,
                       bitfit: BitFitConfig | None = None, **transfer_options) -> list[dict]:
    """Fit each strategy on ``train`` and evaluate on ``test``; one row of metrics per strategy.

    Network strategies share the budget of one :class:`FinetuneConfig` (epochs, batch size,
    schedule): a fair "before vs after transfer" comparison. lora and bitfit take that budget
    with their own learning rate, unless given their own configs. Each row also holds the
    trainable parameters, the checkpoint size and the peak memory of the fit (see
    :class:`~headstart.peak_memory.PeakMemory` for how it is measured).
    """
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ConfigError(f"Unknown strategy '{unknown[0]}'.{did_you_mean(unknown[0], STRATEGIES)} "
                          f"Choose from: {', '.join(STRATEGIES)}.")
    device = resolve_device(transfer_options.get("device", "auto"))
    rows = []
    for strategy in strategies:
        config = _config(strategy, finetune, probe, {"lora": lora, "bitfit": bitfit})
        with PeakMemory(device) as peak:
            fitted = Transfer(model, strategy, config=config, **transfer_options).fit(train)
        metrics = fitted.evaluate(test)
        rows.append({"strategy": strategy, "model": fitted.model_name_, "accuracy": metrics["accuracy"],
                     "f1": metrics["f1"], "precision": metrics["precision"], "recall": metrics["recall"],
                     **_sizes(fitted), "peak_memory_bytes": peak.bytes, "memory_method": peak.method,
                     "train_seconds": fitted.fit_info_["train_seconds"], "metrics": metrics,
                     "history": fitted.history_})
        del fitted
    return rows


def compare_adaptation(train: LabelledData, target: LabelledData, methods: Sequence[str], *,
                       evaluate_on: LabelledData, model: str | None = None, finetune: FinetuneConfig | None = None,
                       probe: LinearProbeConfig | None = None, adapt_options: dict[str, dict] | None = None,
                       **transfer_options) -> list[dict]:
    """Each domain-adaptation method beside the source-only model of its strategy, evaluated on ``evaluate_on``.

    coral and adabn adapt a linear probe, dann and mmd fine-tuning with ``finetune``; the
    source-only row of each strategy is fitted once, with the same split and budget. Rows
    hold ``method``, ``strategy``, the metrics and the fitted ``transfer``.
    """
    from .adaptation import STRATEGIES_OF, make_adapt_config

    configs = [make_adapt_config({"method": m, **(adapt_options or {}).get(m, {})}) for m in methods]
    rows, baselines = [], {}
    for adapt in configs:
        strategy = STRATEGIES_OF[adapt.method][0]
        config = probe if strategy == "linear-probe" else finetune
        adapted = Transfer(model, strategy, config=config, adapt=adapt, **transfer_options).fit(train, target=target)
        if strategy not in baselines:
            baselines[strategy] = Transfer(model, strategy, config=config, **transfer_options).fit(train)
            rows.append(_adaptation_row("source-only", strategy, baselines[strategy], evaluate_on))
        rows.append(_adaptation_row(adapt.method, strategy, adapted, evaluate_on))
    return rows


def _adaptation_row(method: str, strategy: str, fitted: Transfer, data: LabelledData) -> dict:
    metrics = fitted.evaluate(data)
    return {"method": method, "strategy": strategy, "accuracy": metrics["accuracy"], "f1": metrics["f1"],
            "train_seconds": fitted.fit_info_["train_seconds"], "metrics": metrics, "transfer": fitted}


def write_comparison(path: str | Path, rows: list[dict], train: LabelledData, test: LabelledData,
                     data_summary: dict) -> Path:
    """Save a comparison's rows (metrics and histories included) as ``path/comparison.json``,
    atomically, so ``headstart report`` can draw it later."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    content = {"data": data_summary, "train": len(train), "test": len(test), "rows": rows}
    return write_text_atomic(path / "comparison.json", json.dumps(content, indent=1))
