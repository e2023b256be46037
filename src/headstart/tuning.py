"""Hyperparameter search with Optuna, and cross-validation, on top of the strategies.

The search space is keyed by config field name (``lr``, ``C``, ``rank``...), so it applies to
any strategy whose config dataclass has that field; a YAML mapping narrows, pins or extends
it. Trials train through :class:`~headstart.transfer.Transfer`, report the validation macro
F1 the training loop computes after every epoch, and a pruner stops the poor ones early.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
import yaml

from ._version import __version__
from .data import LabelledData, stratified_kfold, stratified_split
from .errors import ConfigError, HeadstartError, did_you_mean
from .evaluation import classification_metrics
from .backbones import default_backbone
from .strategies import fit_linear_probe_strategy, get_strategy, make_config
from .training import Callback, TrainingDiverged
from .transfer import Progress, Transfer, clone

__all__ = ["Param", "DEFAULT_SPACE", "search_space", "TuneSettings", "TuneResult", "TrialPruning", "tune",
           "cross_validate", "read_space", "read_yaml_mapping", "CV_METRICS"]

log = logging.getLogger(__name__)
MONITOR = "val_f1"
CV_METRICS = ("accuracy", "balanced_accuracy", "precision", "recall", "f1")


@dataclass(frozen=True)
class Param:
    """One searched option: a float or int range (optionally log-scaled) or a list of choices."""

    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("float", "int", "categorical"):
            raise ConfigError(f"A search parameter's 'type' must be float, int or categorical. Got {self.kind!r} instead.")
        if self.kind == "categorical":
            if not self.choices:
                raise ConfigError("A categorical search parameter needs a non-empty 'choices' list.")
        elif self.low is None or self.high is None or not self.low <= self.high:
            raise ConfigError(f"A {self.kind} search parameter needs 'low' <= 'high'. Got {self.low!r}, {self.high!r}.")
        elif self.log and self.low <= 0:
            raise ConfigError(f"A log-scaled search parameter needs 'low' > 0. Got {self.low!r} instead.")

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        if self.kind == "float":
            return trial.suggest_float(name, self.low, self.high, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_categorical(name, list(self.choices))

    def to_dict(self) -> dict:
        if self.kind == "categorical":
            return {"type": self.kind, "choices": list(self.choices)}
        return {"type": self.kind, "low": self.low, "high": self.high, "log": self.log}


# Ranges that suit transfer learning from a pre-trained backbone; keyed by config field name.
DEFAULT_SPACE: dict[str, Param] = {
    "lr": Param("float", 1e-5, 3e-3, log=True),
    "weight_decay": Param("float", 1e-5, 0.1, log=True),
    "unfreeze": Param("categorical", choices=("all", "1", "2", "4")),
    "layer_decay": Param("float", 0.5, 1.0),
    "dropout": Param("float", 0.0, 0.5),
    "label_smoothing": Param("float", 0.0, 0.2),
    "epochs": Param("int", 2, 10),
    "C": Param("float", 1e-3, 1e2, log=True),
    "lora_rank": Param("categorical", choices=(4, 8, 16, 32)),
}


def _number(name: str, key: str, value: Any) -> float:
    try:  # YAML 1.1 reads 1e-4 (no dot) as a string
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"The '{key}' of search parameter '{name}' must be a number. Got {value!r} instead.") from None


def _param_from_yaml(name: str, value: dict, default: Param | None) -> Param:
    unknown = sorted(set(value) - {"type", "low", "high", "log", "choices"})
    if unknown:
        raise ConfigError(f"Search parameter '{name}' has unknown key(s) {', '.join(unknown)}; "
                          "use type, low, high, log or choices.")
    base = default.to_dict() if default else {}
    merged = {**base, **value}
    if "choices" in value and "type" not in value:
        merged["type"] = "categorical"
    if "type" not in merged:
        raise ConfigError(f"Search parameter '{name}' has no default range: give its `type` "
                          "(float, int or categorical) and `low`/`high` or `choices`.")
    if merged["type"] == "categorical":
        return Param("categorical", choices=tuple(merged.get("choices") or ()))
    return Param(merged["type"], _number(name, "low", merged.get("low")), _number(name, "high", merged.get("high")),
                 log=bool(merged.get("log", False)))


def search_space(strategy: str, overrides: dict | None = None) -> tuple[dict[str, Param], dict[str, Any]]:
    """The searched parameters and the pinned ones for ``strategy``.

    Defaults are the :data:`DEFAULT_SPACE` entries that name a field of the strategy's
    config. ``overrides`` maps a field to a partial range (``{high: 1e-3}`` narrows the
    default), a full range for a field without a default, a fixed value (pinned, not
    searched), or ``null`` (not searched: the config default applies).
    """
    strategy_class = get_strategy(strategy)
    fields = strategy_class.config_class.__dataclass_fields__
    overrides = dict(overrides or {})
    for name in overrides:
        if name not in fields:
            raise ConfigError(f"The search space names '{name}', which is not an option of the {strategy} strategy."
                              f"{did_you_mean(name, fields)} Its options are: {', '.join(fields)}.")
    fixed = {k: v for k, v in overrides.items() if v is not None and not isinstance(v, dict)}
    space = {name: param for name, param in DEFAULT_SPACE.items()
             if name in fields and name not in overrides and strategy_class.worth_searching(name, fixed)}
    for name, value in overrides.items():
        if isinstance(value, dict):
            space[name] = _param_from_yaml(name, value, DEFAULT_SPACE.get(name))
    return space, fixed


def read_yaml_mapping(path: str | Path, what: str, hint: str) -> dict:
    """A YAML file's top-level mapping, with a :class:`ConfigError` saying what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"The {what} {path} does not exist.")
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(content, dict):
        raise ConfigError(f"{path} must hold a mapping: {hint}.")
    return content


def read_space(path: str | Path) -> dict:
    """Read a search-space YAML file: a mapping of config field names to ranges or values."""
    return read_yaml_mapping(path, "search-space file", "option names to ranges, e.g. `lr: {low: 1.0e-4, high: 1.0e-2}`")


class TrialPruning(Callback):
    """Report each epoch's validation metric to an Optuna trial and stop training when the
    pruner says the trial is not worth finishing (raises :class:`optuna.TrialPruned`).

    With cross-validation, fold ``f`` reports at steps ``f * epochs_per_fold + epoch``, so
    each step compares the same fold and epoch across trials.
    """

    def __init__(self, trial: optuna.Trial, epochs_per_fold: int, monitor: str = MONITOR) -> None:
        self.trial, self.epochs_per_fold, self.monitor = trial, epochs_per_fold, monitor
        self.fold, self.epochs_run = 0, 0

    def on_epoch_end(self, trainer, epoch: int, row: dict) -> None:
        self.epochs_run += 1
        self.trial.set_user_attr("epochs_run", self.epochs_run)
        self.trial.report(float(row[self.monitor]), self.fold * self.epochs_per_fold + epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"{self.monitor} {row[self.monitor]:.4f} at epoch {epoch} of fold {self.fold + 1}")


@dataclass
class TuneSettings:
    """How the search runs (the strategy's own options live in the search space)."""

    trials: int = field(default=20, metadata={"help": "finished trials the study should reach (all processes together)"})
    cv: int | None = field(default=None, metadata={"help": "score each trial by K-fold cross-validation"})
    storage: str | None = field(default=None, metadata={"help": "Optuna storage URL (default: in memory)"})
    study: str = field(default="headstart", metadata={"help": "study name; an existing study is continued"})
    pruner: str = field(default="median", metadata={"help": "median, hyperband or none"})
    pruner_startup: int = field(default=4, metadata={"help": "trials finished before the median pruner prunes"})
    timeout: float | None = field(default=None, metadata={"help": "stop starting trials after this many seconds"})
    seed: int = field(default=0, metadata={"help": "seed of the split, of training and of the sampler"})
    val_fraction: float = field(default=0.15, metadata={"help": "validation share of the training data (no cv)"})
    shared: bool = field(default=False, metadata={
        "help": "several processes work on the study: each draws its own sampler seed, so they explore differently"})

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise ConfigError(f"The 'trials' option of tune must be an int >= 1. Got {self.trials} instead.")
        if self.pruner not in ("median", "hyperband", "none"):
            raise ConfigError(f"The 'pruner' option of tune must be median, hyperband or none. Got {self.pruner!r} instead.")
        if self.cv is not None and self.cv < 2:
            raise ConfigError(f"The 'cv' option must be an int >= 2 (the number of folds). Got {self.cv} instead.")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"The 'timeout' option of tune must be > 0 seconds. Got {self.timeout} instead.")


@dataclass
class TuneResult:
    """What a search found: the best trial's full strategy config, and every trial."""

    strategy: str
    model: str
    best_config: object
    best_value: float
    best_trial: int
    best_epoch: int | None
    trials: list[dict]
    importances: dict[str, float]
    space: dict[str, Param]
    settings: TuneSettings
    study: optuna.Study

    def summary(self) -> dict:
        """JSON-ready: what the report's optimisation history and importances are drawn from."""
        finished = [t for t in self.trials if t["state"] in ("COMPLETE", "PRUNED")]
        run = sum(t["epochs_run"] or 0 for t in finished)
        budget = sum(t["epochs_budget"] or 0 for t in finished)
        return {
            "study": self.settings.study, "storage": _redacted(self.settings.storage), "strategy": self.strategy,
            "model": self.model, "metric": MONITOR, "direction": "maximize", "cv": self.settings.cv,
            "pruner": self.settings.pruner, "seed": self.settings.seed,
            "best": {"trial": self.best_trial, "value": self.best_value, "best_epoch": self.best_epoch,
                     "config": asdict(self.best_config)},
            "space": {name: p.to_dict() for name, p in self.space.items()},
            "trials": self.trials, "importances": self.importances,
            "epochs": {"run": run, "unpruned": budget, "saved_fraction": round(1 - run / budget, 4) if budget else 0.0},
        }

    def run_config(self, refit: bool = False) -> dict:
        """The best trial as a run ``config.yaml`` that ``headstart fit --config`` accepts.

        ``refit`` (training on train + val, where no validation split is left to stop on)
        trains a network for the best trial's best epoch count, without early stopping.
        """
        config = asdict(self.best_config)
        if refit and self.best_epoch and "epochs" in config:
            config.update(epochs=self.best_epoch, patience=0)
        return {"headstart_version": __version__, "backbone": {"name": self.model}, "strategy": self.strategy,
                "strategy_config": config, "seed": self.settings.seed, "val_fraction": self.settings.val_fraction,
                "tuned": {"study": self.settings.study, "trial": self.best_trial, "metric": MONITOR,
                          "value": self.best_value, "cv": self.settings.cv}}


def _redacted(url: str | None) -> str | None:
    if not url or "@" not in url:
        return url
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _storage(url: str | None) -> optuna.storages.BaseStorage | None:
    if url is None:
        return None
    if url.startswith("sqlite:///"):  # several processes on one file: wait for the lock instead of failing
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return _first_open(url, {"connect_args": {"timeout": 60}})
    try:
        return _first_open(url, None)
    except (ImportError, ModuleNotFoundError) as exc:
        raise ConfigError(f"The storage {_redacted(url)} needs a database driver that is not installed ({exc}); "
                          "install it, e.g. `pip install psycopg2-binary` for PostgreSQL or `pip install pymysql` for MySQL.") from None
    except Exception as exc:  # noqa: BLE001 - sqlalchemy raises many kinds for a bad URL
        raise ConfigError(f"Optuna cannot open the storage {_redacted(url)}: {exc}") from None


def _first_open(url: str, engine_kwargs: dict | None, attempts: int = 5) -> optuna.storages.RDBStorage:
    """Open an RDB storage; processes starting together race to create its tables, and the
    losers find them made when they try again."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except (OperationalError, IntegrityError):
            if attempt == attempts - 1:
                raise
            log.info("Storage %s is being set up by another process; trying again", _redacted(url))
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def _pruner(settings: TuneSettings, max_steps: int) -> optuna.pruners.BasePruner:
    if settings.pruner == "none":
        return optuna.pruners.NopPruner()
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(max_steps, 1), reduction_factor=3)
    return optuna.pruners.MedianPruner(n_startup_trials=settings.pruner_startup, n_warmup_steps=0)


def _folds(train: LabelledData, settings: TuneSettings) -> list[tuple[LabelledData, LabelledData]]:
    """The (fit, validation) pairs every trial is scored on: the same ones ``Transfer.fit`` makes."""
    noun = "images" if train.modality == "image" else "samples"
    if settings.cv:
        pairs = stratified_kfold(train.y, settings.cv, settings.seed, class_names=train.classes, noun=noun)
    else:
        pairs = [tuple(stratified_split(train.y, [settings.val_fraction], settings.seed,
                                        class_names=train.classes, noun=noun))]
    return [(train.subset(a), train.subset(b)) for a, b in pairs]


class _Objective:
    """Trains one trial's config on every fold and returns its mean validation macro F1."""

    def __init__(self, strategy: str, model: str, train: LabelledData, space: dict[str, Param], fixed: dict,
                 settings: TuneSettings, transfer_options: dict,
                 trial_callbacks: Callable[[optuna.Trial, object], list[Callback]] | None) -> None:
        self.strategy, self.model, self.space, self.fixed = strategy, model, space, fixed
        self.settings, self.options, self.trial_callbacks = settings, transfer_options, trial_callbacks
        self.estimator = Transfer(model, strategy, seed=settings.seed, **transfer_options)
        self.folds = _folds(train, settings)
        self.train = train
        epochs = space.get("epochs")
        self.epochs_per_fold = int(epochs.high) if epochs else int(fixed.get("epochs", getattr(
            make_config(strategy, None), "epochs", 1)))
        self._features: np.ndarray | None = None

    def config(self, trial: optuna.Trial):
        values = {name: param.suggest(trial, name) for name, param in self.space.items()}
        return make_config(self.strategy, {**self.fixed, **values})

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        config = self.config(trial)
        folds = len(self.folds)
        trial.set_user_attr("epochs_budget", getattr(config, "epochs", 0) * folds)
        network = get_strategy(self.strategy).trains_backbone  # else a head on cached features: no backbone pass
        scores = self._network(trial, config) if network else self._probe(trial, config)
        trial.set_user_attr("fold_scores", scores)
        return float(np.mean(scores))

    def _network(self, trial: optuna.Trial, config) -> list[float]:
        pruning = TrialPruning(trial, self.epochs_per_fold)
        scores, best_epochs = [], []
        for fold, (fit_part, val_part) in enumerate(self.folds):
            pruning.fold = fold
            extra = self.trial_callbacks(trial, config) if self.trial_callbacks else []
            model = clone(self.estimator, config=config)
            model.fit(fit_part, val_part, callbacks=[pruning, *extra])
            best = max(model.history_, key=lambda row: row[MONITOR])
            scores.append(float(best[MONITOR]))
            best_epochs.append(int(best["epoch"]))
        trial.set_user_attr("best_epoch", int(round(np.mean(best_epochs))))
        trial.set_user_attr("best_val_loss", float(best["val_loss"]))  # last fold's: lets a refit check it repeats
        return scores

    def features(self) -> np.ndarray:
        """Frozen-backbone features of the whole training data, extracted (or read from cache) once."""
        if self._features is None:
            from .backbones import build_backbone
            from .devices import resolve_device
            from .features import extract_features

            backbone = build_backbone(self.model, weights=self.options.get("weights"))
            self._features = extract_features(
                backbone, self.train, cache_dir=self.options.get("cache_dir"),
                use_cache=self.options.get("use_cache", True), batch_size=self.options.get("batch_size", 64),
                num_workers=self.options.get("num_workers") or 0, device=resolve_device(self.options.get("device", "auto")))
        return self._features

    def _probe(self, trial: optuna.Trial, config) -> list[float]:
        """Linear-probe trials fit a head on cached features: no backbone pass after the first."""
        features, index = self.features(), {loc: i for i, loc in enumerate(self.train.locations)}
        scores = []
        for fold, (fit_part, val_part) in enumerate(self.folds):
            x_fit = features[[index[loc] for loc in fit_part.locations]]
            x_val = features[[index[loc] for loc in val_part.locations]]
            fitted = fit_linear_probe_strategy(config, x_fit, fit_part.y, x_val, val_part.y,
                                               len(self.train.classes), self.settings.seed, refit_on_all=False)
            with torch.inference_mode():
                predicted = fitted.head.eval()(torch.as_tensor(x_val)).argmax(1).numpy()
            scores.append(classification_metrics(val_part.y, predicted, self.train.classes)["f1"])
            trial.report(float(np.mean(scores)), fold)
            if trial.should_prune():
                raise optuna.TrialPruned(f"{MONITOR} {np.mean(scores):.4f} after fold {fold + 1}")
        return scores


def _trial_rows(study: optuna.Study) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
        rows.append({"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
                     "epochs_run": t.user_attrs.get("epochs_run"), "epochs_budget": t.user_attrs.get("epochs_budget"),
                     "best_epoch": t.user_attrs.get("best_epoch"), "worker": t.user_attrs.get("worker"),
                     "seconds": round(seconds, 2) if seconds is not None else None,
                     "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())}})
    return rows


def _importances(study: optuna.Study, seed: int) -> dict[str, float]:
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 2:
        return {}
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
        return {k: round(float(v), 4) for k, v in optuna.importance.get_param_importances(study, evaluator=evaluator).items()}
    except (RuntimeError, ValueError) as exc:  # e.g. every trial drew the same values
        log.info("Parameter importances not computed: %s", exc)
        return {}


def tune(train: LabelledData, strategy: str = "finetune", *, model: str | None = None,
         settings: TuneSettings | None = None, space: dict | None = None, transfer_options: dict | None = None,
         trial_callbacks: Callable[[optuna.Trial, object], list[Callback]] | None = None,
         after_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
         progress: Progress | None = None) -> TuneResult:
    """Search the strategy's options on ``train`` with Optuna (TPE sampler, per-epoch pruning).

    Each trial is scored by the validation macro F1 (mean over folds with ``settings.cv``)
    on splits of ``train`` made as ``Transfer.fit`` makes them, so ``Transfer(...,
    config=result.best_config, seed=settings.seed).fit(train)`` reproduces the best score.
    ``space`` narrows or overrides the default search space (see :func:`search_space`);
    ``transfer_options`` go to every :class:`Transfer` (weights, cache_dir, device...);
    ``trial_callbacks(trial, config)`` adds training callbacks (experiment tracking) and
    ``after_trial(study, trial)`` runs when a trial ends, whatever its state.
    """
    settings = settings or TuneSettings()
    transfer_options = dict(transfer_options or {})
    if model == "auto":
        raise ConfigError("tune searches one backbone's options; choose the backbone first with `headstart rank DATA` "
                          "and give it with `--model NAME`.")
    model = model or default_backbone(train.modality)
    searched, fixed = search_space(strategy, space)
    objective = _Objective(strategy, model, train, searched, fixed, settings, transfer_options, trial_callbacks)
    sampler_seed = settings.seed + (os.getpid() if settings.shared else 0)
    study = optuna.create_study(
        study_name=settings.study, storage=_storage(settings.storage), direction="maximize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=sampler_seed),
        pruner=_pruner(settings, objective.epochs_per_fold * len(objective.folds)))
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    callbacks = [optuna.study.MaxTrialsCallback(settings.trials, states=finished)] + ([after_trial] if after_trial else [])
    if progress:
        def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            done = len(study.get_trials(deepcopy=False, states=finished))
            note = f"#{trial.number} {trial.state.name.lower()}" + (f" {trial.value:.4f}" if trial.value is not None else "")
            progress("trials", min(done, settings.trials), settings.trials, note)
        callbacks.append(report)
    already = len(study.get_trials(deepcopy=False, states=finished))
    started = time.perf_counter()
    if already < settings.trials:
        study.optimize(objective, n_trials=settings.trials - already, timeout=settings.timeout, callbacks=callbacks,
                       catch=(TrainingDiverged,), gc_after_trial=True)
    log.info("Search of %s/%s took %.1f s", strategy, model, time.perf_counter() - started)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise HeadstartError(f"No trial of study '{settings.study}' finished (all pruned or failed); "
                             "raise `--trials`, or widen the search space.")
    best = study.best_trial
    best_config = make_config(strategy, {**fixed, **best.params})
    return TuneResult(strategy, model, best_config, float(best.value), best.number, best.user_attrs.get("best_epoch"),
                      _trial_rows(study), _importances(study, settings.seed), searched, settings, study)


def cross_validate(estimator: Transfer, data: LabelledData, k: int, seed: int = 0,
                   progress: Progress | None = None) -> dict:
    """Stratified K-fold estimate of how well ``estimator`` generalises on ``data``.

    Each fold fits a fresh :func:`~headstart.transfer.clone` of it on the other K-1 folds
    (choosing its own hyperparameters on a share of them) and scores the held-out fold;
    returns each fold's metrics and the mean and sample standard deviation of each.
    """
    noun = "images" if data.modality == "image" else "samples"
    folds = stratified_kfold(data.y, k, seed, class_names=data.classes, noun=noun)
    rows = []
    for number, (fit_idx, held_idx) in enumerate(folds, 1):
        metrics = clone(estimator).fit(data.subset(fit_idx)).evaluate(data.subset(held_idx))
        rows.append({"fold": number, "samples": metrics["samples"], **{m: metrics[m] for m in CV_METRICS}})
        if progress:
            progress("cross-validation", number, k)
    values = {m: np.array([row[m] for row in rows]) for m in CV_METRICS}
    return {"k": k, "seed": seed, "folds": rows,
            "mean": {m: float(v.mean()) for m, v in values.items()},
            "std": {m: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for m, v in values.items()}}
