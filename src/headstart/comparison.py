"""Before and after transfer: several strategies on the same split and budget, side by side."""

from __future__ import annotations

from collections.abc import Sequence

from .data import LabelledData
from .errors import ConfigError, did_you_mean
from .strategies import STRATEGIES, FinetuneConfig, LinearProbeConfig
from .transfer import Transfer

__all__ = ["compare_strategies", "compare_adaptation", "DEFAULT_COMPARISON"]

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
