"""``Transfer``: the estimator users fit, evaluate, save and load.

It follows scikit-learn's contract: ``__init__`` stores its arguments, ``fit`` does the
work and returns ``self``, what was learned ends in an underscore, and ``get_params`` /
``set_params`` / :func:`clone` rebuild an unfitted copy. How the backbone is transferred is
the strategy's business (``strategies/``); domain adaptation is the method's (``adaptation/``).
"""

from __future__ import annotations

import copy
import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import distributed
from ._version import __version__
from .adaptation import AdaptationMethod, make_adaptation
from .backbones import Backbone, build_backbone, default_backbone
from .contract import InputContract
from .data import LabelledData, stratified_split
from .data.opening import Inputs, as_inputs
from .devices import default_workers, resolve_device
from .errors import ConfigError, DataError, HeadstartError, first_line
from .evaluation import classification_metrics
from .features import extract_features
from .inference import TEST_VIEWS, check_tta, viewed_backbone
from .ranking import default_candidates, rank
from .runs import RunFiles, write_run
from .strategies import ComputeContext, FitJob, Strategy, get_strategy
from .training import Callback

__all__ = ["Transfer", "Classifier", "ENSEMBLE", "load_run", "check_one_model", "clone", "NotFittedError", "EpochProgress"]

Progress = Callable[..., None]
ENSEMBLE = "ensemble"  # the strategy an ensemble run (``ensemble.py``) records in config.yaml


class NotFittedError(HeadstartError, AttributeError):
    """The model has not been fitted yet."""


class EpochProgress(Callback):
    """Reports training batches, and each epoch's validation scores, to a progress callback."""

    def __init__(self, progress: Progress, label: str = "") -> None:
        self.progress, self.label = progress, f"{label} " if label else ""

    def on_batch_end(self, trainer, step: int, steps: int) -> None:
        self.progress(f"{self.label}epoch {trainer.epoch + 1}/{trainer.settings.epochs}", step, steps)

    def on_epoch_end(self, trainer, epoch: int, row: dict) -> None:
        note = f"loss {row['train_loss']:.3f}  val acc {row['val_accuracy']:.3f}  val F1 {row['val_f1']:.3f}"
        self.progress(f"{self.label}epoch {epoch}/{trainer.settings.epochs}", 1, 1, note)


class Classifier:
    """What every fitted classifier (a :class:`Transfer`, an ``Ensemble``) derives from its class
    probabilities: predicted names, metrics, and metrics with one row per sample."""

    classes_: list[str]

    def predict_proba(self, data: Inputs) -> np.ndarray:
        raise NotImplementedError

    def predict(self, data: Inputs) -> list[str]:
        """The predicted class name of each sample: of data headstart read, or of texts / image paths
        given directly (``model.predict(["great phone"])``)."""
        probabilities = self.predict_proba(data)
        return [self.classes_[i] for i in probabilities.argmax(1)]

    def evaluate(self, data: LabelledData) -> dict:
        """Accuracy, balanced accuracy, macro and per-class precision/recall/F1, confusion matrix."""
        return self.evaluate_with_predictions(data)[0]

    def evaluate_with_predictions(self, data: LabelledData) -> tuple[dict, list[dict]]:
        """The metrics of :meth:`evaluate`, and one row per sample (location, true and predicted
        class, confidence; the text for text data), so a report can show the mistakes without
        running the model again."""
        if not isinstance(data, LabelledData):
            raise DataError(f"evaluate needs labelled data (hs.ImageFolder, hs.TextTable, ...), not a "
                            f"{type(data).__name__}: the true classes come from the data.")
        data = data.with_classes(self.classes_)
        probabilities = self.predict_proba(data)
        predicted = probabilities.argmax(1)
        rows = [{"location": location, "true": self.classes_[t], "predicted": self.classes_[p],
                 "confidence": round(float(row[p]), 4), **({"text": item} if data.modality == "text" else {})}
                for location, item, t, p, row in zip(data.locations, data.items, data.y, predicted, probabilities)]
        return classification_metrics(data.y, predicted, self.classes_), rows


class Transfer(Classifier):
    """Transfer a pre-trained backbone to a labelled data set.

    Parameters
    ----------
    model: a registered backbone (``headstart models``), ``timm:<name>``, ``hf:<id or folder>`` or
        ``run:<run folder>`` (the backbone a network-strategy run fitted), any image one with
        ``@<pixels>`` to feed it at that input size (``efficientnet_lite0@128``); None picks the
        packaged default for the data (efficientnet_lite0 for images, minilm for text); ``auto`` ranks
        ``candidates`` by LogME on the training data and fits the best.
    strategy: how to transfer (``hs.strategy_names()``); ``linear-probe`` trains a new head on frozen features.
    candidates: backbones ``auto`` chooses from (default: every offline one of the modality).
    config: the strategy's options, as its config dataclass or a dict of its fields.
    weights: a local weights file replacing the backbone's default weights.
    val_fraction: share of the training data held out to choose hyperparameters when
        ``fit`` gets no validation set.
    cache_dir, use_cache: where cached features live (default ``~/.cache/headstart``).
    batch_size, num_workers, device: how feature extraction and prediction run.
    seed: every random choice (splits, initialisation) follows from it.
    progress: called as ``progress(stage, done, total)`` during long steps.
    adapt: domain adaptation to unlabelled target data given to ``fit(train, target=...)``:
        ``coral``, ``adabn``, ``dann`` or ``mmd``, or that method's config (``hs.adaptation``).
    refit: after choosing on the validation share, train again on all of ``train`` with what was
        chosen (the best epoch count), as ``LogisticRegressionCV(refit=True)`` does; the linear
        probe always does (its validation share joins the final head's fit).
    tta: test-time augmentation for images: predictions average the class probabilities of each image
        and its mirror image (every strategy; the linear probe caches the mirrored features under a
        key of their own). Choosing and early stopping on the validation share do not use it.
    """

    def __init__(self, model: str | None = None, strategy: str = "linear-probe", *,
                 candidates: list[str] | None = None, config: object | dict | None = None, weights: str | Path | None = None,
                 val_fraction: float = 0.15, cache_dir: str | Path | None = None, use_cache: bool = True,
                 batch_size: int = 64, num_workers: int | None = None, device: str = "auto",
                 seed: int = 0, progress: Progress | None = None,
                 adapt: str | dict | object | None = None, refit: bool = False, tta: bool = False) -> None:
        self.model = model
        self.strategy = strategy
        self.candidates = candidates
        self.config = config
        self.weights = weights
        self.val_fraction = val_fraction
        self.cache_dir = cache_dir
        self.use_cache = use_cache
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.device = device
        self.seed = seed
        self.progress = progress
        self.adapt = adapt
        self.refit = refit
        self.tta = tta

    # -- the estimator contract -------------------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        return [name for name in inspect.signature(cls.__init__).parameters if name != "self"]

    def get_params(self, deep: bool = True) -> dict:
        """The constructor's arguments, as given (scikit-learn's contract)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params) -> Transfer:
        """Change constructor arguments; an unknown name is an error naming the valid ones."""
        unknown = sorted(set(params) - set(self._param_names()))
        if unknown:
            raise ConfigError(f"{', '.join(unknown)} is not a parameter of Transfer; its parameters are: "
                              f"{', '.join(self._param_names())}.")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def _check_fitted(self) -> None:
        """The one fitted check: every fitted attribute exists once ``strategy_`` does."""
        if "strategy_" not in self.__dict__:
            raise NotFittedError("This Transfer is not fitted yet. Call `fit(train)` first, or `hs.load(RUN)`.")

    @property
    def net_(self) -> nn.Module:
        """The whole fitted network: backbone, dropout and head."""
        self._check_fitted()
        return self.strategy_.net_

    @property
    def head_(self) -> nn.Module:
        """The fitted head."""
        return self.net_.head

    @property
    def config_(self):
        """The strategy's typed config the model was fitted with."""
        self._check_fitted()
        return self.strategy_.config

    # -- fitting ------------------------------------------------------------------------------
    def _features(self, data: LabelledData, stage: str, module: nn.Module | None = None, *,
                  view: str | None = None) -> np.ndarray:
        """Features by the fitted backbone (cached), or by a modified copy of it (never cached); with
        ``view``, of that test-time view of each image (cached under the view's own key)."""
        label = f"{self.backbone_.name} {stage}{f' ({view})' if view else ''}"  # compare and rank run several models
        progress = (lambda done, total: self.progress(label, done, total)) if self.progress else None
        backbone = self.backbone_ if module is None else replace(self.backbone_, module=module)
        backbone = backbone if view is None else viewed_backbone(backbone, view)
        return extract_features(backbone, data, cache_dir=self.cache_dir, use_cache=self.use_cache and module is None,
                                batch_size=self.batch_size, num_workers=default_workers(self.num_workers),
                                device=self.device_, progress=progress)

    def _split(self, train: LabelledData, val: LabelledData | None) -> tuple[LabelledData, LabelledData]:
        """The fit and validation parts: ``val`` as given, else a stratified share of ``train``."""
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"The 'val_fraction' option must be in (0, 1). Got {self.val_fraction} instead.")
        train.y  # noqa: B018 - raises a DataError on unlabelled data, before any model work
        if val is None:
            train_idx, val_idx = stratified_split(train.y, [self.val_fraction], self.seed, class_names=train.classes)
            train, val = train.subset(train_idx), train.subset(val_idx)
        val = val.with_classes(train.classes)
        counts = np.bincount(train.y, minlength=len(train.classes))
        empty = [name for name, count in zip(train.classes, counts) if count == 0]
        if empty:
            raise DataError(f"class {', '.join(map(repr, empty))} has no training samples in {train.source}; "
                            "add samples of it or remove the class.")
        return train, val

    def _adaptation(self, strategy: type[Strategy], train: LabelledData,
                    target: LabelledData | None) -> AdaptationMethod | None:
        method = make_adaptation(self.adapt)
        if method is None and target is not None:
            raise ConfigError("`target` data is only used for domain adaptation; give `adapt=` a method "
                              "(hs.adaptation.adaptation_names()), or leave `target` out.")
        if method is not None:
            method.check(strategy, train, target)
        return method

    def _context(self, view: str | None = None) -> ComputeContext:
        features = self._features if view is None else (
            lambda data, stage, module=None: self._features(data, stage, module, view=view))
        return ComputeContext(self.backbone_, self.device_, self.batch_size, default_workers(self.num_workers),
                              features, self.progress, view)

    def fit(self, train: LabelledData, val: LabelledData | None = None, *, target: LabelledData | None = None,
            checkpoint: str | Path | None = None, resume: bool = False,
            callbacks: Sequence[Callback] = ()) -> Transfer:
        """Fit on ``train``; hyperparameters are chosen on ``val`` (or a stratified share of train).

        ``target`` is unlabelled data of the domain the model must work in, used by ``adapt``.
        Network strategies write ``checkpoint`` after every epoch; with ``resume`` they
        continue from it exactly where the interrupted run stopped. ``callbacks`` join the
        training loop of network strategies (pruning a search, experiment tracking).
        """
        strategy = get_strategy(self.strategy)(self.config)
        method = self._adaptation(type(strategy), train, target)
        if self.tta:
            check_tta(train.modality)
        if self.refit and val is not None:
            raise ConfigError("`refit` trains again on the training data together with the validation share it "
                              "took out; with a validation set of your own (`--val`), leave `refit` off.")
        whole = train
        train, val = self._split(train, val)
        self.device_ = distributed.join(resolve_device(self.device))
        started = time.perf_counter()
        self._choose_backbone(train)
        with torch.random.fork_rng(devices=[]):  # random weights (scratch) follow the run's seed, not the global state
            torch.manual_seed(self.seed)
            self.backbone_ = build_backbone(self.model_name_, weights=self.weights, pretrained=strategy.pretrained)
        self.model_name_ = self.backbone_.name  # as config.yaml records it: a `run:` folder made absolute
        self.classes_ = list(train.classes)
        progress = [EpochProgress(self.progress, strategy.name)] if self.progress else []
        job = FitJob(**vars(self._context()), classes=self.classes_, train=train, val=val, seed=self.seed,
                     strategy=strategy, target=target, adaptation=method, checkpoint=Path(checkpoint) if checkpoint else None,
                     resume=resume, callbacks=[*progress, *callbacks],
                     info={"train_samples": len(train), "val_samples": len(val),
                           **({"target_samples": len(target)} if target is not None else {})})
        if method is not None:
            method.check_backbone(job)
        strategy.fit(job)
        self.history_ = strategy.history_  # the selection's curves, also after a refit
        if self.refit:
            strategy, method = self._refit(strategy, job, whole)
        if method is not None:
            method.after_fit(job, strategy)
        self.strategy_, self.adapt_ = strategy, method
        self.fit_info_ = {**job.info, "train_seconds": round(time.perf_counter() - started, 3),
                          "trainable_params": strategy.trainable_parameters()}
        return self

    def _refit(self, chosen: Strategy, job: FitJob, whole: LabelledData) -> tuple[Strategy, AdaptationMethod | None]:
        """Train a fresh strategy on all of ``whole`` (train + validation) with what ``chosen`` picked;
        validation scores of this pass are not honest and pick nothing (no early stopping)."""
        config = chosen.refit_config(job.info)
        if config is None:  # nothing was held back for good (the linear probe refits on all itself)
            return chosen, job.adaptation
        strategy = type(chosen)(config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            backbone = build_backbone(self.model_name_, weights=self.weights, pretrained=strategy.pretrained)
        method = make_adaptation(self.adapt)
        again = replace(job, backbone=backbone, train=whole, strategy=strategy, adaptation=method, checkpoint=None,
                        resume=False, info={})
        strategy.fit(again)
        self.backbone_ = backbone
        job.info["refit"] = {"train_samples": len(whole), "epochs": getattr(config, "epochs", None)}
        return strategy, method

    def _choose_backbone(self, train: LabelledData) -> None:
        """The backbone name to use: given, the modality's default, or the winner of a ranking."""
        self.ranking_ = None
        self.model_name_ = self.model or default_backbone(train.modality)
        if self.model == "auto":
            self.ranking_ = [row.to_dict() for row in rank(
                self.candidates or default_candidates(train.modality), train, cache_dir=self.cache_dir,
                use_cache=self.use_cache, batch_size=self.batch_size, num_workers=default_workers(self.num_workers),
                device=self.device_, progress=self.progress, seed=self.seed)]  # a large split: on a sample of it
            self.model_name_ = self.ranking_[0]["model"]

    @property
    def contract_(self) -> InputContract:
        """The backbone's input contract: how data is prepared for it."""
        self._check_fitted()
        return self.backbone_.contract

    def trainable_parameters(self) -> int:
        """How many weights the strategy trains (the head alone for a linear probe)."""
        self._check_fitted()
        return self.strategy_.trainable_parameters()

    # -- using a fitted model -----------------------------------------------------------------
    def predict_proba(self, data: Inputs) -> np.ndarray:
        """Class probabilities for each sample (data headstart read, or texts / image paths given
        directly), columns in the order of ``classes_``; with ``tta``, the mean over the image and each
        test-time view of it (``inference.TEST_VIEWS``: its mirror image)."""
        self._check_fitted()
        data = as_inputs(data, self.contract_.modality)
        probabilities = self.strategy_.predict_proba(data, self._context())
        if not self.tta:
            return probabilities
        check_tta(self.contract_.modality)
        for view in TEST_VIEWS:
            probabilities = probabilities + self.strategy_.predict_proba(data, self._context(view))
        return probabilities / (1 + len(TEST_VIEWS))

    # -- persistence --------------------------------------------------------------------------
    def checkpoint_tensors(self) -> dict:
        """The tensors ``save`` writes: the whole network, or for lora / bitfit only what trained
        (adapter or biases) and the head, since the frozen base is rebuilt from its weights."""
        self._check_fitted()
        return self.strategy_.state_tensors()

    def deployable(self) -> Transfer:
        """This model with a lora adapter or bitfit's biases folded into its backbone (:meth:`merge`),
        one plain network to export; a model without an adapter is returned as it is."""
        self._check_fitted()
        if self.strategy_.adapter:
            self.strategy_.merge()
        return self

    def merge(self) -> Transfer:
        """Fold a lora adapter (or bitfit's biases) into a plain backbone, for deployment: the
        model then predicts the same and saves every weight, like a fine-tuned run."""
        self._check_fitted()
        self.strategy_.merge()
        return self

    def run_config(self) -> dict:
        """What ``config.yaml`` records: backbone, strategy and options, seed, what the fit chose."""
        self._check_fitted()
        config = {
            "headstart_version": __version__,
            "backbone": {"name": self.model_name_, "weights": str(self.weights) if self.weights else None,
                         "weights_digest": self.backbone_.weights_digest},
            "strategy": self.strategy_.name,
            "strategy_config": self.strategy_.config_dict(),
            "seed": self.seed, "val_fraction": self.val_fraction, "batch_size": self.batch_size,
            "fit": {k: v for k, v in self.fit_info_.items() if k != "search"},
        }
        if self.adapt_ is not None:
            config["adapt"] = self.adapt_.to_dict()
        if self.tta:  # load, evaluate, predict and export apply it
            config["tta"] = True
        if self.ranking_:
            config["backbone"]["chosen_by"] = "LogME ranking of " + ", ".join(r["model"] for r in self.ranking_)
        return {**config, **self.strategy_.run_entries()}

    def save(self, path: str | Path, metrics: dict | None = None, extra: dict | None = None,
             finish: Callable[[Path], object] | None = None) -> Path:
        """Write a run directory (config, labels, contract, metrics, safetensors weights);
        ``extra`` adds JSON files by name, e.g. ``{"predictions": rows}``; ``finish(folder)``
        adds more (the report) before the run is renamed into place."""
        extra = {**({"ranking": self.ranking_} if self.ranking_ else {}), **(extra or {})}
        if self.history_:
            extra["history"] = self.history_
        run = RunFiles(self.run_config(), self.classes_, self.contract_.to_dict(), metrics or {},
                       self.checkpoint_tensors(), extra)
        return write_run(path, run, finish)

    def _restore(self, run: RunFiles, path: str | Path) -> Transfer:
        """Become the fitted model a run directory describes, checking its backbone's weights."""
        strategy = get_strategy(self.strategy)(self.config)
        recorded = run.config["backbone"]
        on_base = strategy.needs_pretrained_base(run.config, list(run.tensors))
        backbone: Backbone = build_backbone(self.model, weights=self.weights, pretrained=on_base)
        if on_base and backbone.weights_digest != recorded["weights_digest"]:
            raise ConfigError(
                f"The weights of backbone '{self.model}' on this machine (digest {backbone.weights_digest}) "
                f"are not the ones {path} was trained with (digest {recorded['weights_digest']}). "
                "Give the same weights (`--weights` when fitting) or fit the run again on these.")
        try:
            strategy.restore(backbone, len(run.labels), run.tensors, run.config)
        except (RuntimeError, KeyError, ValueError) as exc:  # torch's shape and key mismatches
            raise DataError(f"{path}: model.safetensors does not fit the model that config.yaml and labels.json "
                            f"describe ({len(run.labels)} classes, {self.model}): {first_line(exc, 200)}") from None
        self.device_, self.backbone_, self.model_name_ = resolve_device(self.device), backbone, self.model
        self.classes_, self.adapt_ = list(run.labels), make_adaptation(self.adapt)
        self.fit_info_, self.metrics_ = run.config.get("fit", {}), run.metrics
        self.ranking_, self.history_ = run.extra.get("ranking"), run.extra.get("history", [])
        self.strategy_ = strategy
        return self


def load_run(run: RunFiles, path: str | Path, *, device: str = "auto", cache_dir: str | Path | None = None,
             progress: Progress | None = None) -> Transfer:
    """A saved run of one model, already read with ``runs.read_run``, as a fitted :class:`Transfer`
    (``path`` names it in messages); ``ensemble.load`` reads any run."""
    backbone = _recorded_backbone(run.config, path)
    model = Transfer(backbone["name"], run.config["strategy"], config=run.config["strategy_config"],
                     weights=backbone.get("weights"), seed=run.config.get("seed", 0),
                     batch_size=run.config.get("batch_size", 64), cache_dir=cache_dir, device=device,
                     progress=progress, adapt=run.config.get("adapt"), tta=bool(run.config.get("tta", False)))
    return model._restore(run, path)


def check_one_model(config: dict, path: str | Path) -> None:
    """Refuse an ensemble's run where one network's run is needed (a `run:` backbone)."""
    if config.get("strategy") == ENSEMBLE:
        raise ConfigError(f"{path} is an ensemble of several networks; use it with `hs.load` (evaluate, predict, "
                          "export, serve). A backbone (`run:`) comes from one network's run.")


def _recorded_backbone(config: dict, path: str | Path) -> dict:
    """The ``backbone`` entry of a run's config.yaml, checked to hold what loading needs."""
    check_one_model(config, path)
    backbone = config.get("backbone")
    if not isinstance(backbone, dict) or not isinstance(backbone.get("name"), str):
        raise DataError(f"{path}/config.yaml is damaged: it names no backbone (`backbone: name:`).")
    if not isinstance(config.get("strategy"), str) or not isinstance(config.get("strategy_config") or {}, dict):
        raise DataError(f"{path}/config.yaml is damaged: it needs `strategy` and a `strategy_config` mapping.")
    return backbone


def clone(estimator: Transfer, **changes) -> Transfer:
    """An unfitted copy with the same parameters (scikit-learn's ``clone``), some optionally changed.

    Parameters are deep-copied, so changing the copy's config never changes the original's;
    the progress callback is shared.
    """
    params = estimator.get_params()
    progress = params.pop("progress")
    return type(estimator)(**copy.deepcopy(params), progress=progress).set_params(**changes)
