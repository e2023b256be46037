"""``Transfer``: the estimator users fit, evaluate, save and load.

It follows scikit-learn's contract: ``__init__`` stores its arguments, ``fit`` does the
work and returns ``self``, and what was learned ends in an underscore.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import __version__
from . import adaptation
from .backbones import Backbone, build_backbone
from .contract import InputContract
from .data import LabelledData, stratified_split
from .errors import ConfigError, DataError, HeadstartError
from .evaluation import classification_metrics
from .features import extract_features
from .heads import build_head
from .ranking import default_candidates, rank
from .runs import RunFiles, read_run, write_run
from .strategies import (NETWORK_STRATEGIES, PEFT_STRATEGIES, LinearProbeConfig, fit_linear_probe_strategy, make_config,
                         train_network)
from .strategies.peft_tuning import merge_backbone, prepare_backbone, restore_backbone, trained_backbone_state
from .training import Callback, TransferNet

__all__ = ["Transfer", "load", "NotFittedError"]

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]
DEFAULT_BACKBONES = {"image": "efficientnet_lite0", "text": "minilm"}


class NotFittedError(HeadstartError, AttributeError):
    """The model has not been fitted yet."""


class EpochProgress(Callback):
    """Reports training batches, and each epoch's validation scores, to a progress callback."""

    def __init__(self, progress: Progress, epochs: int) -> None:
        self.progress, self.epochs = progress, epochs

    def on_batch_end(self, trainer, step: int, steps: int) -> None:
        self.progress(f"epoch {trainer.epoch + 1}/{self.epochs}", step, steps)

    def on_epoch_end(self, trainer, epoch: int, row: dict) -> None:
        note = (f"loss {row['train_loss']:.3f}  val acc {row['val_accuracy']:.3f}  val F1 {row['val_f1']:.3f}")
        self.progress(f"epoch {epoch}/{self.epochs}", 1, 1, note)


def network_probabilities(net: TransferNet, data: LabelledData, backbone: Backbone, device: torch.device,
                          batch_size: int, workers: int, progress: Progress | None = None) -> np.ndarray:
    """Softmax outputs of a whole network over unlabelled or labelled data."""
    from torch.utils.data import DataLoader

    from .data import TextCollate, image_transform, load_image

    contract = backbone.contract
    net.eval().to(device)
    if contract.modality == "image":
        transform = image_transform(contract)
        loader = DataLoader(data.items, batch_size=batch_size, num_workers=workers,
                            collate_fn=lambda paths: torch.stack([transform(load_image(p)) for p in paths]))
    else:
        loader = DataLoader(data.items, batch_size=batch_size, collate_fn=TextCollate(backbone.tokenizer, contract.max_length or 512))
    out, done = [], 0
    with torch.inference_mode():
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()} if isinstance(batch, dict) else batch.to(device)
            out.append(torch.softmax(net(batch).float(), dim=1).cpu())
            done += len(out[-1])
            if progress:
                progress("predicting", done, len(data))
    return torch.cat(out).numpy()


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("`--device cuda` was asked for, but torch sees no CUDA device. Use `--device cpu`.")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"The 'device' option must be auto, cpu or cuda. Got {device!r} instead.")
    return torch.device(device)


class Transfer:
    """Transfer a pre-trained backbone to a labelled data set.

    Parameters
    ----------
    model: a registered backbone (``headstart models``), ``timm:<name>`` or ``hf:<id or folder>``;
        None picks the packaged default for the data (efficientnet_lite0 for images, minilm for
        text); ``auto`` ranks ``candidates`` by LogME on the training data and fits the best.
    candidates: backbones ``auto`` chooses from (default: every offline one of the modality).
    strategy: how to transfer; ``linear-probe`` trains a new head on frozen features.
    config: the strategy's options, as its config dataclass or a dict of its fields.
    weights: a local weights file replacing the backbone's default weights.
    val_fraction: share of the training data held out to choose hyperparameters when
        ``fit`` gets no validation set.
    cache_dir, use_cache: where cached features live (default ``~/.cache/headstart``).
    batch_size, num_workers, device: how feature extraction runs.
    seed: every random choice (splits, initialisation) follows from it.
    progress: called as ``progress(stage, done, total)`` during long steps.
    adapt: domain adaptation to unlabelled target data given to ``fit(train, target=...)``:
        ``coral``, ``adabn``, ``dann`` or ``mmd``, or that method's config (``hs.adaptation``).
    """

    def __init__(self, model: str | None = None, strategy: str = "linear-probe", *,
                 candidates: list[str] | None = None, config: object | dict | None = None, weights: str | Path | None = None,
                 val_fraction: float = 0.15, cache_dir: str | Path | None = None, use_cache: bool = True,
                 batch_size: int = 64, num_workers: int | None = None, device: str = "auto",
                 seed: int = 0, progress: Progress | None = None,
                 adapt: str | dict | object | None = None) -> None:
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

    # -- fitting -------------------------------------------------------------------------
    def _strategy_config(self):
        return make_config(self.strategy, self.config)

    def _workers(self) -> int:
        if self.num_workers is not None:
            return self.num_workers
        cores = os.cpu_count() or 1
        # On 2 cores a decoding worker competes with the model's threads; decoding in the main
        # process was faster there (bench/extraction_throughput.py --workers).
        return 0 if cores <= 2 else min(4, cores // 2)

    def _features(self, data: LabelledData, stage: str, backbone: Backbone | None = None) -> np.ndarray:
        """Features by the fitted backbone (cached), or by a modified copy of it (never cached)."""
        progress = (lambda done, total: self.progress(stage, done, total)) if self.progress else None
        return extract_features(backbone or self.backbone_, data, cache_dir=self.cache_dir,
                                use_cache=self.use_cache and backbone is None,
                                batch_size=self.batch_size, num_workers=self._workers(),
                                device=self.device_, progress=progress)

    def fit(self, train: LabelledData, val: LabelledData | None = None, *, target: LabelledData | None = None,
            checkpoint: str | Path | None = None, resume: bool = False,
            callbacks: Sequence[Callback] = ()) -> Transfer:
        """Fit on ``train``; hyperparameters are chosen on ``val`` (or a stratified share of train).

        ``target`` is unlabelled data of the domain the model must work in, used by ``adapt``.
        Network strategies write ``checkpoint`` after every epoch; with ``resume`` they
        continue from it exactly where the interrupted run stopped. ``callbacks`` join the
        training loop of network strategies (pruning a search, experiment tracking).
        """
        config = self._strategy_config()
        self.adapt_ = adapt = adaptation.make_adapt_config(self.adapt)
        adaptation.check_target(adapt, self.strategy, train, target)
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"The 'val_fraction' option must be in (0, 1). Got {self.val_fraction} instead.")
        train.y  # noqa: B018 - raises a DataError on unlabelled data, before any model work
        if val is None:
            train_idx, val_idx = stratified_split(train.y, [self.val_fraction], self.seed)
            train, val = train.subset(train_idx), train.subset(val_idx)
        val = val.with_classes(train.classes)
        empty = [name for name, count in zip(train.classes, np.bincount(train.y, minlength=len(train.classes)))
                 if count == 0]
        if empty:
            raise DataError(f"class {', '.join(map(repr, empty))} has no training samples in {train.source}; "
                            "add samples of it or remove the class.")
        self.device_ = resolve_device(self.device)
        start = time.perf_counter()
        self._choose_backbone(train)
        self.classes_ = list(train.classes)
        self.config_ = config
        self.history_: list[dict] = []
        network = self.strategy in NETWORK_STRATEGIES
        self.backbone_ = build_backbone(self.model_name_, weights=self.weights, pretrained=self.strategy != "scratch")
        self.contract_: InputContract = self.backbone_.contract
        self.fit_info_ = {"train_samples": len(train), "val_samples": len(val)}
        method = adapt.method if adapt else None
        if method == "adabn":
            adaptation.require_batchnorm(self.backbone_)
        if target is not None:
            self.fit_info_["target_samples"] = len(target)
        if not network or self.strategy == "lp-ft":
            probe_config = config if not network else LinearProbeConfig(class_weight=config.class_weight)
            source_backbone = None
            if method == "adabn" and not network and adapt.source_statistics:
                source_backbone = replace(self.backbone_, module=self._batchnorm_on(train, self.backbone_.module))
            x_train = self._features(train, "train features", source_backbone)
            x_val = self._features(val, "validation features", source_backbone)
            if method == "coral":
                alignment = adaptation.CoralAlignment(adapt.regularisation, adapt.align_mean)
                alignment.fit(x_train, self._features(target, "target features"))
                x_train, x_val = alignment.transform(x_train), alignment.transform(x_val)
            # lp-ft's fine-tuning stage early-stops on val: its starting head must not have seen val
            fitted = fit_linear_probe_strategy(probe_config, x_train, train.y, x_val, val.y, len(self.classes_), self.seed,
                                               refit_on_all=not network)
            self.head_ = fitted.head.eval()
            self.fit_info_.update(selected=fitted.params, val_accuracy=fitted.val_accuracy,
                                  probe_seconds=round(time.perf_counter() - start, 3))
        if network:
            torch.manual_seed(self.seed)
            head = self.head_ if self.strategy == "lp-ft" else nn.Linear(self.contract_.feature_dim, len(self.classes_))
            progress = [EpochProgress(self.progress, config.epochs)] if self.progress else []
            prepare = (functools.partial(prepare_backbone, self.strategy, config, backbone_name=self.model_name_)
                       if self.strategy in PEFT_STRATEGIES else None)
            self.merged_ = False
            auxiliary = adaptation.target_loss(
                adapt, self.backbone_, target, batch_size=config.batch_size, num_workers=self._workers(),
                min_crop=config.min_crop, randaugment=config.randaugment) if method in ("dann", "mmd") else None
            self.net_, self.history_ = train_network(
                self.strategy, config, self.backbone_, head, train, val, self.classes_, device=self.device_,
                seed=self.seed, num_workers=self._workers(), checkpoint=Path(checkpoint) if checkpoint else None,
                resume=resume, callbacks=[*progress, *callbacks], prepare=prepare, auxiliary=auxiliary)
            self.head_ = self.net_.head
            best = max(self.history_, key=lambda row: row["val_f1"])
            self.fit_info_.update(best_epoch=best["epoch"], epochs_run=len(self.history_),
                                  val_accuracy=best["val_accuracy"])
        if method == "adabn":  # the network the run holds normalises with the target's statistics
            network_of = self.net_ if network else TransferNet(self.backbone_.module, self.head_)
            network_of.backbone = self._batchnorm_on(target, network_of.backbone)
            self.net_ = network_of.eval()
        self.fit_info_["train_seconds"] = round(time.perf_counter() - start, 3)
        self.fit_info_["trainable_params"] = self.trainable_parameters()
        return self

    def _batchnorm_on(self, data: LabelledData, module: nn.Module) -> nn.Module:
        """A copy of ``module`` with BatchNorm statistics re-estimated on ``data`` (AdaBN)."""
        return adaptation.with_batchnorm_statistics(self.backbone_, data, batch_size=self.batch_size,
                                                    num_workers=self._workers(), device=self.device_, module=module)

    def _choose_backbone(self, train: LabelledData) -> None:
        """The backbone name to use: given, the modality's default, or the winner of a ranking."""
        self.ranking_ = None
        self.model_name_ = self.model or DEFAULT_BACKBONES[train.modality]
        if self.model == "auto":
            self.ranking_ = [row.to_dict() for row in rank(
                self.candidates or default_candidates(train.modality), train, cache_dir=self.cache_dir,
                use_cache=self.use_cache, batch_size=self.batch_size, num_workers=self._workers(),
                device=self.device_, progress=self.progress)]
            self.model_name_ = self.ranking_[0]["model"]

    def trainable_parameters(self) -> int:
        """How many weights the strategy trains (the head alone for a linear probe)."""
        self._check_fitted()
        if not hasattr(self, "net_") or self.strategy not in NETWORK_STRATEGIES:  # adabn: statistics, not weights
            return sum(p.numel() for p in self.head_.parameters())
        config = self.config_
        if self._adapter():
            return sum(p.numel() for p in self.net_.parameters() if p.requires_grad)
        if config.unfreeze == "all":
            return sum(p.numel() for p in self.net_.parameters())
        from .training import group_of_parameters, trainable_groups

        groups = self.contract_.layer_groups
        index = group_of_parameters(self.net_.backbone, groups)
        first = len(groups) - trainable_groups(len(groups), config.unfreeze)
        backbone = sum(p.numel() for n, p in self.net_.backbone.named_parameters() if index[n] >= first)
        return backbone + sum(p.numel() for p in self.net_.head.parameters())

    # -- using a fitted model ------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "head_"):
            raise NotFittedError("This Transfer is not fitted yet. Call `fit(train)` first, or `hs.load(RUN)`.")

    def predict_proba(self, data: LabelledData) -> np.ndarray:
        """Class probabilities for each sample, columns in the order of ``classes_``."""
        self._check_fitted()
        if hasattr(self, "net_"):  # the backbone changed: cached features no longer apply
            return network_probabilities(self.net_, data, self.backbone_, self.device_, self.batch_size,
                                         self._workers(), self.progress)
        features = torch.as_tensor(self._features(data, "features"))
        with torch.inference_mode():
            return torch.softmax(self.head_(features), dim=1).numpy()

    def predict(self, data: LabelledData) -> list[str]:
        """The predicted class name of each sample."""
        probabilities = self.predict_proba(data)
        return [self.classes_[i] for i in probabilities.argmax(1)]

    def evaluate(self, data: LabelledData) -> dict:
        """Accuracy, balanced accuracy, macro and per-class precision/recall/F1, confusion matrix."""
        return self.evaluate_with_predictions(data)[0]

    def evaluate_with_predictions(self, data: LabelledData) -> tuple[dict, list[dict]]:
        """The metrics of :meth:`evaluate`, and one row per sample (location, true and predicted
        class, confidence; the text for text data), so a report can show the mistakes without
        running the model again."""
        data = data.with_classes(self.classes_)
        probabilities = self.predict_proba(data)
        predicted = probabilities.argmax(1)
        rows = [{"location": location, "true": self.classes_[t], "predicted": self.classes_[p],
                 "confidence": round(float(row[p]), 4), **({"text": item} if data.modality == "text" else {})}
                for location, item, t, p, row in zip(data.locations, data.items, data.y, predicted, probabilities)]
        return classification_metrics(data.y, predicted, self.classes_), rows

    # -- persistence ---------------------------------------------------------------------
    def _adapter(self) -> bool:
        """Whether the network is a frozen base plus trained parts (lora, bitfit, not merged)."""
        return hasattr(self, "net_") and self.strategy in PEFT_STRATEGIES and not getattr(self, "merged_", False)

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        """The tensors ``save`` writes: the whole network, or for lora / bitfit only what trained
        (adapter or biases) and the head, since the frozen base is rebuilt from its weights."""
        self._check_fitted()
        if self._adapter():
            trained = trained_backbone_state(self.strategy, self.net_.backbone)
            return {**{f"backbone.{k}": v for k, v in trained.items()},
                    **{f"head.{k}": v for k, v in self.net_.head.state_dict().items()}}
        module = self.net_ if hasattr(self, "net_") else self.head_
        prefix = "" if hasattr(self, "net_") else "head."
        return {f"{prefix}{k}": v for k, v in module.state_dict().items()}

    def merge(self) -> Transfer:
        """Fold a lora adapter (or bitfit's biases) into a plain backbone, for deployment: the
        model then predicts the same and saves every weight, like a fine-tuned run."""
        self._check_fitted()
        if not self._adapter():
            raise ConfigError(f"Only lora and bitfit runs have an adapter to merge; this is a {self.strategy} "
                              "run" + (" that is merged already." if getattr(self, "merged_", False) else "."))
        self.net_.backbone = merge_backbone(self.strategy, self.net_.backbone)
        self.merged_ = True
        return self

    def save(self, path: str | Path, metrics: dict | None = None, extra: dict | None = None) -> Path:
        """Write a run directory (config, labels, contract, metrics, safetensors weights);
        ``extra`` adds JSON files by name, e.g. ``{"predictions": rows}``."""
        self._check_fitted()
        config = {
            "headstart_version": __version__,
            "backbone": {"name": self.model_name_, "weights": str(self.weights) if self.weights else None,
                         "weights_digest": self.backbone_.weights_digest},
            "strategy": self.strategy,
            "strategy_config": asdict(self.config_),
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "batch_size": self.batch_size,
            "fit": {k: v for k, v in self.fit_info_.items() if k != "search"},
        }
        if getattr(self, "adapt_", None):
            config["adapt"] = adaptation.adapt_config_dict(self.adapt_)
        if self.ranking_:
            config["backbone"]["chosen_by"] = "LogME ranking of " + ", ".join(r["model"] for r in self.ranking_)
        if self.strategy in PEFT_STRATEGIES:
            config["checkpoint"] = "adapter" if self._adapter() else "merged"
        tensors = self.checkpoint_tensors()
        extra = {**({"ranking": self.ranking_} if self.ranking_ else {}), **(extra or {})}
        if self.history_:
            extra["history"] = self.history_
        run = RunFiles(config, self.classes_, self.contract_.to_dict(), metrics or {}, tensors, extra)
        return write_run(path, run)


def load(path: str | Path, *, device: str = "auto", cache_dir: str | Path | None = None,
         progress: Progress | None = None) -> Transfer:
    """Load a saved run as a fitted :class:`Transfer`, checking the backbone's weights match."""
    run = read_run(path)
    backbone_cfg = run.config["backbone"]
    model = Transfer(backbone_cfg["name"], run.config["strategy"], config=run.config["strategy_config"],
                     weights=backbone_cfg.get("weights"), seed=run.config.get("seed", 0),
                     batch_size=run.config.get("batch_size", 64), cache_dir=cache_dir, device=device,
                     progress=progress, adapt=run.config.get("adapt"))
    model.config_ = model._strategy_config()
    model.model_name_ = model.model
    model.device_ = resolve_device(device)
    model.classes_ = list(run.labels)
    model.adapt_ = adaptation.make_adapt_config(model.adapt)
    network = model.strategy in NETWORK_STRATEGIES or (model.adapt or {}).get("method") == "adabn"
    adapter = run.config.get("checkpoint") == "adapter"  # the run holds only what trained, on a pre-trained base
    backbone: Backbone = build_backbone(model.model, weights=model.weights, pretrained=adapter or not network)
    if (adapter or not network) and backbone.weights_digest != backbone_cfg["weights_digest"]:
        raise ConfigError(
            f"The weights of backbone '{model.model}' on this machine (digest {backbone.weights_digest}) "
            f"are not the ones {path} was trained with (digest {backbone_cfg['weights_digest']}). "
            "Give the same weights (`--weights` when fitting) or fit the run again on these.")
    model.backbone_, model.contract_ = backbone, backbone.contract
    n_classes, dim = len(model.classes_), backbone.contract.feature_dim
    if adapter:
        trained = {k.removeprefix("backbone."): v for k, v in run.tensors.items() if k.startswith("backbone.")}
        module = restore_backbone(model.strategy, model.config_, backbone.module, trained, model.model)
        model.net_ = TransferNet(module, nn.Linear(dim, n_classes), model.config_.dropout)
        model.net_.head.load_state_dict({k.removeprefix("head."): v for k, v in run.tensors.items()
                                         if k.startswith("head.")}, strict=True)
        model.net_.eval()
        model.head_, model.merged_ = model.net_.head, False
    elif network:  # the run holds every weight of the network
        fine_tuned = model.strategy in NETWORK_STRATEGIES  # else adabn: a probe head on target statistics
        head = nn.Linear(dim, n_classes) if fine_tuned else _probe_head(model.config_, dim, n_classes)
        model.net_ = TransferNet(backbone.module, head, getattr(model.config_, "dropout", 0.0))
        model.merged_ = model.strategy in PEFT_STRATEGIES
        model.net_.load_state_dict(run.tensors, strict=True)
        model.head_ = model.net_.head
    else:
        head_state = {k.removeprefix("head."): v for k, v in run.tensors.items() if k.startswith("head.")}
        model.head_ = _probe_head(model.config_, dim, n_classes)
        model.head_.load_state_dict(head_state, strict=True)
        model.head_.eval()
    if network and backbone.contract.channels_last:  # as trained: same kernels, same predictions
        model.net_.to(memory_format=torch.channels_last)
    model.fit_info_ = run.config.get("fit", {})
    model.metrics_ = run.metrics
    model.ranking_ = run.extra.get("ranking")
    model.history_ = run.extra.get("history", [])
    return model


def _probe_head(config: LinearProbeConfig, dim: int, n_classes: int) -> nn.Module:
    """An untrained head shaped like the one a linear-probe config fits."""
    options = {"hidden": config.hidden, "dropout": config.dropout} if config.head == "mlp" else {}
    return build_head(config.head, dim, n_classes, **options)
