"""Whole runs as ``headstart`` makes them, callable from Python.

:func:`fit_run` fits, evaluates and saves a run directory from data on disk, and
:func:`resume_run` continues one that was interrupted; :func:`read_run_config` reads a
run's or a search's ``config.yaml``; :func:`save_search` and :func:`refit_best` finish a
hyperparameter search; :func:`adapt_run` adapts a model to a target domain and saves it
beside its source-only baseline. The command line only parses, calls these and prints.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from . import distributed
from .data import LabelledData, stratified_split
from .data.opening import open_data
from .data.reading import ReadOptions
from .devices import resolve_device
from .errors import ConfigError, DataError, HeadstartError
from .runs import check_output_dir, write_text_atomic

__all__ = ["RunConfig", "read_run_config", "RunArgs", "FitRun",
           "FitRunResult", "fit_run", "resume_run", "work_dir", "save_search", "refit_best", "refit_on_all", "saved_arguments", "held_workspace", "trial_trackers",
           "AdaptRunResult", "adapt_run", "share_features_of", "Evaluation", "evaluate_run", "run_modality", "training_overlap",
           "trained_on_digests"]

ARGS_FILE = "args.json"
DATA_FILE = "data.sha256"
CHECKPOINT = "checkpoint.pt"
Progress = Callable[..., None]
T = TypeVar("T")


# -- config files --------------------------------------------------------------------------------
@dataclass
class RunConfig:
    """What a run's (or a search's) ``config.yaml`` fixes: backbone, strategy and its options,
    seed and weights; ``source`` is the file it was read from (None: the defaults)."""

    model: str | None = None
    strategy: str = "linear-probe"
    options: dict = field(default_factory=dict)
    seed: int = 0
    weights: Path | None = None
    source: Path | None = None

    def overridden(self, *, model: str | None = None, strategy: str | None = None, options: dict | None = None,
                   seed: int | None = None, weights: str | Path | None = None) -> RunConfig:
        """This config with what was given (None: not given) taking precedence, options merged
        field by field; a strategy other than the file's is an error."""
        if strategy is not None and self.source is not None and strategy != self.strategy:
            raise ConfigError(f"`--strategy {strategy}` contradicts {self.source}, which configures {self.strategy}; "
                              "drop one of them.")
        given = {k: v for k, v in (options or {}).items() if v is not None}
        return RunConfig(model or self.model, strategy or self.strategy, {**self.options, **given},
                         self.seed if seed is None else seed, Path(weights) if weights else self.weights, self.source)


def read_run_config(path: str | Path) -> RunConfig:
    """Read the ``config.yaml`` of a run (``fit``) or of a search (``tune``: its best trial)."""
    from .tuning import read_yaml_mapping

    config = read_yaml_mapping(path, "config file", "`strategy`, `strategy_config`, `backbone` and `seed`")
    if "strategy" not in config or "strategy_config" not in config:
        raise ConfigError(f"{path} is not a headstart config: it needs `strategy` and `strategy_config` "
                          "(write one with `headstart tune` or `headstart fit`).")
    backbone = config.get("backbone") or {}
    weights = backbone.get("weights")
    return RunConfig(backbone.get("name"), config["strategy"], dict(config["strategy_config"] or {}),
                     int(config.get("seed", 0)), Path(weights) if weights else None, Path(path))


# -- fitting a run directory, resumably -----------------------------------------------------------
def hold_lock(path: Path, out_dir: Path):
    """An exclusive lock on ``path`` (held until the returned file is closed, or the process ends):
    two fits writing one run at once would silently leave the last writer's."""
    import fcntl

    handle = open(path, "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise ConfigError(f"Another headstart process is writing the run {out_dir} (it holds {path}); wait for it "
                          "to finish, or give another `--out`.") from None
    return handle


def saved_arguments(out_dir: str | Path, name: str, job: str, parse: Callable[[dict], T]) -> T:
    """What an interrupted ``job`` (training, pre-training, an ``auto`` job) saved as ``name`` in the work
    dir of ``out_dir``, parsed; a missing or damaged file is a clear error."""
    saved = work_dir(out_dir) / name
    if not saved.is_file():
        raise DataError(f"{out_dir} has no unfinished {job} to resume (no {saved}).")
    try:
        return parse(json.loads(saved.read_text(encoding="utf-8")))
    except (ValueError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise DataError(f"{saved} is damaged ({exc}); the interrupted {job} cannot be resumed. Start it again "
                        f"without `--resume` after removing {saved.parent}.") from None


@contextmanager
def held_workspace(out_dir: str | Path, keep: str, refused: Callable[[HeadstartError], None] | None = None):
    """The work dir of the job writing ``out_dir``, created and locked while the job runs; a job that
    fails before writing ``keep`` (its checkpoint or state) leaves nothing behind. ``refused(error)`` is
    told when another job holds the lock (a distributed fit's other ranks then stop too)."""
    workspace = work_dir(out_dir)
    try:
        workspace.mkdir(parents=True, exist_ok=True)
        lock = hold_lock(workspace / "lock", Path(out_dir))
    except HeadstartError as exc:
        if refused is not None:
            refused(exc)
        raise
    try:
        yield workspace
    except BaseException:
        if not (workspace / keep).is_file():  # nothing to resume
            shutil.rmtree(workspace, ignore_errors=True)
        raise
    finally:
        lock.close()


def work_dir(out_dir: str | Path) -> Path:
    """Where an unfinished run keeps its checkpoint and arguments (a hidden sibling of the run)."""
    out_dir = Path(out_dir)
    return out_dir.parent / f".{out_dir.name}.unfinished"


@dataclass
class RunArgs:
    """Everything a run needs to (re)start: saved as ``args.json`` in its work dir until it ends.

    ``options`` are the strategy's (a dict of its config fields); ``test`` and ``val`` the
    held-out shares; ``batch_size``, ``workers`` and ``device`` how extraction and prediction
    run; ``cv`` adds a K-fold estimate on the training split; ``track`` logs to mlflow or
    tensorboard (``track_uri``: where); ``audit`` audits the data before the split, ``drop``
    removes the samples it flags as those kinds (names of ``data_audit.DROP_KINDS``); ``refit``
    trains again on train + validation with the best epoch count (``Transfer(refit=True)``); ``tta``
    predicts with test-time augmentation (``Transfer(tta=True)``, images only).
    """

    data: str
    out_dir: str
    model: str | None = None
    strategy: str = "linear-probe"
    candidates: list[str] | None = None
    options: dict = field(default_factory=dict)
    text_column: str = "text"
    label_column: str | None = "label"
    test: float = 0.2
    val: float = 0.0
    seed: int = 0
    weights: str | None = None
    strict: bool = False
    batch_size: int = 64
    workers: int | None = None
    device: str = "auto"
    cache_dir: str | None = None
    no_cache: bool = False
    cv: int | None = None
    track: str | None = None
    track_uri: str | None = None
    reading: dict = field(default_factory=dict)
    audit: bool = False
    drop: list[str] | None = None
    refit: bool = False
    tta: bool = False

    @classmethod
    def create(cls, data: str | Path, out_dir: str | Path, **settings: Any) -> RunArgs:
        """From any of the fields; paths become strings (as ``args.json`` holds them)."""
        unknown = sorted(set(settings) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"{', '.join(unknown)} is not a setting of a run; its settings are: "
                              f"{', '.join(f.name for f in fields(cls))}.")
        paths = {k: str(v) for k, v in settings.items() if k in ("weights", "cache_dir") and v is not None}
        return cls(data=str(data), out_dir=str(out_dir), **{**settings, **paths})

    @classmethod
    def from_dict(cls, values: dict) -> RunArgs:
        """From ``args.json`` (older ones held the candidates as one comma-separated string)."""
        known = {f.name for f in fields(cls)}
        args = {k: v for k, v in values.items() if k in known}
        if isinstance(args.get("candidates"), str):
            args["candidates"] = [n.strip() for n in args["candidates"].split(",") if n.strip()] or None
        return cls(**args)


@dataclass
class FitRunResult:
    """What :meth:`FitRun.run` made: the fitted estimator, its test metrics (with
    ``fit_seconds``), the cross-validation estimate if asked for, and where the run is."""

    transfer: Any
    metrics: dict
    cv: dict | None
    out_dir: Path
    resumed: bool = False


class FitRun:
    """One ``headstart fit``: open the data, split it, fit, evaluate on the test split, save
    the run directory with its report.

    The config is checked and the data opened at construction, so a caller can describe the
    data (and :meth:`split` it) before :meth:`run` trains. While training, the run's
    arguments and last checkpoint live in :func:`work_dir`; after an interruption
    :meth:`resume` continues where it stopped.
    """

    def __init__(self, args: RunArgs, *, resumed: bool = False) -> None:
        from .strategies import get_strategy

        self.args, self.resumed = args, resumed
        self.config = get_strategy(args.strategy).make_config(dict(args.options))
        self.data = open_data(args.data, args.text_column, args.label_column, args.strict, ReadOptions(**args.reading))
        self.train: LabelledData | None = None
        self.val: LabelledData | None = None
        self.test: LabelledData | None = None
        self._followers = False  # other ranks wait for rank 0's go (a distributed network fit)
        self.audit_result, self.dropped, self.leakage = None, [], None  # fit --audit / --drop; the split's copies

    @classmethod
    def resume(cls, out_dir: str | Path) -> FitRun:
        """The interrupted run that was to be written to ``out_dir``, from its saved arguments."""
        return cls(saved_arguments(out_dir, ARGS_FILE, "training", RunArgs.from_dict), resumed=True)

    @property
    def out_dir(self) -> Path:
        return Path(self.args.out_dir)

    def split(self) -> tuple[LabelledData, LabelledData | None, LabelledData]:
        """(train, val or None, test), stratified, from the run's seed."""
        if self.train is None:
            a = self.args
            if a.drop:
                self.audit()
            parts = self.data.split(test=a.test, val=a.val, seed=a.seed) if a.val > 0 else \
                self.data.split(test=a.test, seed=a.seed)
            self.train, self.val, self.test = (parts[0], None, parts[1]) if len(parts) == 2 else parts
        return self.train, self.val, self.test

    def audit(self, progress: Progress | None = None):
        """Audit the data before it is split (``fit --audit``) and drop what ``args.drop`` names."""
        from .data_audit import audit, drop_flagged

        if self.audit_result is None:
            a, model = self.args, None if self.args.model == "auto" else self.args.model
            distributed.join(resolve_device(a.device))  # under a launcher rank 0 audits, and every rank drops alike
            if distributed.current().is_main:
                self.audit_result = audit(self.data, model=model, weights=a.weights if model else None, seed=a.seed,
                                          cache_dir=a.cache_dir, use_cache=not a.no_cache, batch_size=a.batch_size,
                                          num_workers=a.workers, device=a.device, progress=progress)
            self.audit_result = distributed.broadcast(self.audit_result)
            self.data, self.dropped = drop_flagged(self.data, self.audit_result, a.drop or [])
        return self.audit_result

    def transfer(self, progress: Progress | None = None):
        """A fresh, unfitted estimator as the run configures it."""
        from .transfer import Transfer

        a = self.args
        return Transfer(a.model, a.strategy, candidates=a.candidates, config=self.config, weights=a.weights,
                        cache_dir=a.cache_dir, use_cache=not a.no_cache, batch_size=a.batch_size,
                        num_workers=a.workers, device=a.device, seed=a.seed, progress=progress, refit=a.refit,
                        tta=a.tta)

    def run(self, progress: Progress | None = None) -> FitRunResult | None:
        """Fit (continuing from the checkpoint when resumed), evaluate, save; return the result.

        Under a launcher every rank calls it: a network trains on all of them, features are
        shared out among them first, and rank 0 alone writes the run and returns its result
        (the others return None).
        """
        check_output_dir(self.out_dir, [self.args.data])
        self.split()
        world = distributed.current()
        if world.size > 1 and not self._share(progress if world.is_main else None):
            return None
        if not world.is_main:
            return self._follow()
        with held_workspace(self.out_dir, CHECKPOINT, refused=self._tell_followers) as workspace:
            return self._run_locked(workspace, progress)

    def _share(self, progress: Progress | None) -> bool:
        """Join the launcher's job and share out the features a strategy reads; whether this rank
        has more to do (a strategy that trains no network is then fit by rank 0 alone)."""
        from .strategies import get_strategy

        strategy = get_strategy(self.args.strategy)
        if strategy.reads_features:
            a = self.args
            models = a.candidates or None if a.model == "auto" else [a.model]
            share_features_of(models, [self.data], weights=a.weights, cache_dir=a.cache_dir, use_cache=not a.no_cache,
                              batch_size=a.batch_size, workers=a.workers, device=a.device, progress=progress)
        else:
            distributed.join(resolve_device(self.args.device))
        self._followers = strategy.trains_backbone
        return strategy.trains_backbone or distributed.current().is_main

    def _tell_followers(self, failure: HeadstartError | None) -> None:
        """Rank 0's go (None) or refusal to the other ranks of a distributed network fit."""
        if self._followers:
            distributed.broadcast(failure)

    def _follow(self) -> None:
        """A rank other than 0 in a distributed network fit: train and predict its shards; rank 0 writes."""
        failure = distributed.broadcast(None)
        if failure is not None:
            raise failure
        train, val, test = self.split()
        if self.args.cv:
            self._cross_validate(None)
        estimator = self.transfer().fit(train, val, checkpoint=work_dir(self.out_dir) / CHECKPOINT,
                                        resume=self.resumed)
        estimator.evaluate_with_predictions(test)

    def _run_locked(self, workspace: Path, progress: Progress | None) -> FitRunResult:
        from .tracking import open_tracker

        train, val, test = self.split()
        fingerprint = data_fingerprint(self.data)
        try:
            self._check_workspace(workspace, fingerprint)
        except HeadstartError as exc:
            self._tell_followers(exc)
            raise
        self._tell_followers(None)  # they may start
        write_text_atomic(workspace / ARGS_FILE, json.dumps(asdict(self.args), indent=1))
        write_text_atomic(workspace / DATA_FILE, fingerprint)
        started = time.perf_counter()
        tracker = open_tracker(self.args.track, self.out_dir.name, uri=self.args.track_uri)
        cv = self._cross_validate(progress) if self.args.cv else None
        estimator = self.transfer(progress).fit(train, val, checkpoint=workspace / CHECKPOINT,
                                                resume=self.resumed, callbacks=[tracker] if tracker else [])
        metrics, predictions = estimator.evaluate_with_predictions(test)
        self.leakage = _split_leakage(estimator, train, test, self.args)
        metrics["fit_seconds"] = round(time.perf_counter() - started, 2)
        self._save(estimator, metrics, predictions, cv)
        shutil.rmtree(workspace, ignore_errors=True)
        if tracker:
            _log_run(tracker, estimator, self.args, metrics, cv, self.out_dir)
        return FitRunResult(estimator, metrics, cv, self.out_dir, self.resumed)

    def _check_workspace(self, workspace: Path, fingerprint: str) -> None:
        """A new fit never overwrites an interrupted one's checkpoint, and a resumed one needs the
        data it started on: resuming on changed data would silently mix two data sets."""
        if not self.resumed and (workspace / CHECKPOINT).is_file():
            raise ConfigError(f"`--out {self.out_dir}` has an interrupted fit with a checkpoint in {workspace}; "
                              f"continue it with `headstart fit --resume {self.out_dir}`, or remove {workspace} "
                              "to start over.")
        saved = workspace / DATA_FILE
        if self.resumed and saved.is_file() and saved.read_text() != fingerprint:
            raise DataError(f"The data at {self.args.data} changed since the interrupted fit to {self.out_dir} "
                            f"started; resuming would mix two data sets. Restore the data, or remove {workspace} "
                            "and fit again.")

    def _cross_validate(self, progress: Progress | None) -> dict:
        from .tuning import cross_validate

        return cross_validate(self.transfer(progress), self.train, self.args.cv, self.args.seed, progress)

    def _save(self, estimator, metrics: dict, predictions: list[dict], cv: dict | None) -> None:
        documents = {"test": metrics, "data": self.data.summary(), **({"cv": cv} if cv else {}),
                     "split_leakage": self.leakage}
        audited = {"audit": self.audit_result.to_dict(), "dropped": self.dropped} if self.audit_result else {}
        trained_on = [self.train, *([self.val] if self.val is not None else [])]
        estimator.save(self.out_dir, metrics=documents, extra={"predictions": predictions, **audited,
                                                               TRAINED_ON: trained_on_digests(trained_on)},
                       finish=with_report(self.out_dir))


def _split_leakage(estimator, train: LabelledData, test: LabelledData, args: RunArgs) -> dict:
    """Copies across the fit's own split, logged as a warning: near copies from the frozen backbone's
    cached features where the fit left them all, else exact copies only (no extra feature pass)."""
    from .data_audit import warn_split_leakage

    backbone = None if args.no_cache else estimator.backbone_
    return warn_split_leakage(train, test, backbone, cache_dir=args.cache_dir)


def with_report(out_dir: str | Path) -> Callable[[Path], object]:
    """What ``Transfer.save(finish=...)`` calls to write the report inside the run before it is
    renamed into place: a run is never left (or replaced) without its report."""
    from .report import write_report

    return lambda folder: write_report(folder, f"headstart report: {Path(out_dir).name}")


def data_fingerprint(data: LabelledData) -> str:
    """A digest of what a fit trains on: each sample's label with the text itself, or with the image
    file's path inside the data folder, size and modification time (cheap: no image is read; a
    moved data folder keeps its digest)."""
    digest = hashlib.sha256()
    labels = data.labels if data.labels is not None else [None] * len(data)
    for item, label in zip(data.items, labels):
        if data.modality == "image":
            stat = os.stat(item)
            item = f"{os.path.relpath(item, data.source)}:{stat.st_size}:{stat.st_mtime_ns}"
        digest.update(json.dumps([item, label]).encode("utf-8"))
    return digest.hexdigest()


def _log_run(tracker, estimator, args: RunArgs, metrics: dict, cv: dict | None, out_dir: Path) -> None:
    tracker.log_params({"model": estimator.model_name_, "strategy": args.strategy, "seed": args.seed,
                        **asdict(estimator.config_)})
    tracker.log_metrics({"test": metrics, **({"cv": cv["mean"]} if cv else {})})
    tracker.log_artifacts(out_dir)
    tracker.close()


def fit_run(data: str | Path, out_dir: str | Path, *, progress: Progress | None = None,
            **settings: Any) -> FitRunResult | None:
    """Fit on the data at ``data`` (an image folder or a text table), evaluate on a held-out
    test split and write the run directory ``out_dir`` (model, metrics, predictions, report),
    exactly as ``headstart fit`` does.

    ``settings`` are the fields of :class:`RunArgs`: ``model``, ``strategy``, ``options``
    (the strategy's config fields), ``test``, ``val``, ``seed``, ``weights``, ``cv``... If
    it is interrupted, :func:`resume_run` continues it from its last epoch.
    """
    return FitRun(RunArgs.create(data, out_dir, **settings)).run(progress)


def resume_run(out_dir: str | Path, *, progress: Progress | None = None) -> FitRunResult | None:
    """Continue an interrupted :func:`fit_run` (or ``headstart fit``) to ``out_dir``."""
    return FitRun.resume(out_dir).run(progress)


def _share_adaptation(strategy: str, model: str | None, datasets: list[LabelledData | None],
                      options: dict) -> bool:
    """Under a launcher: share out the features a feature-based adaptation (coral, adabn) reads;
    whether this rank has more to do (rank 0 then adapts alone, from the cache)."""
    from .strategies import get_strategy

    if not distributed.launched():
        return True
    if get_strategy(strategy).trains_backbone:  # dann, mmd: every rank trains
        distributed.join(resolve_device(options.get("device", "auto")))
        return True
    share_features_of([model], [d for d in datasets if d is not None], weights=options.get("weights"),
                      cache_dir=options.get("cache_dir"), use_cache=options.get("use_cache", True),
                      batch_size=options.get("batch_size", 64), workers=options.get("num_workers"),
                      device=options.get("device", "auto"))
    return distributed.current().is_main


def share_features_of(models: Sequence[str | None] | None, datasets: Sequence[LabelledData], *,
                      weights: str | Path | None = None, cache_dir: str | Path | None = None, use_cache: bool = True,
                      batch_size: int = 64, workers: int | None = None, device: str = "auto",
                      progress: Progress | None = None) -> None:
    """Under a launcher, embed ``datasets`` with each backbone in ``models`` (None: the modality's
    default; ``models=None``: the default candidates), each rank a disjoint share, into the feature
    cache; afterwards every rank reads them from the cache. Nothing happens in a job of one."""
    from .backbones import build_backbone, default_backbone
    from .devices import default_workers
    from .features import share_features
    from .ranking import default_candidates

    torch_device = distributed.join(resolve_device(device))
    if distributed.current().size == 1 or not datasets:
        return
    if not use_cache:
        raise ConfigError("Processes of a distributed job share features through the feature cache: drop "
                          "`--no-cache`, or give `--cache-dir` a folder every process can reach.")
    modality = datasets[0].modality
    for name in models if models is not None else default_candidates(modality):
        backbone = build_backbone(name or default_backbone(modality), weights=weights if models else None)
        for data in datasets:
            report = (lambda done, total, stage=f"sharing {backbone.name} features": progress(stage, done, total)) \
                if progress else None
            share_features(backbone, data, cache_dir=cache_dir, batch_size=batch_size,
                           num_workers=default_workers(workers), device=torch_device, progress=report)


# -- evaluating a run on data --------------------------------------------------------------------------
TRAINED_ON = "trained_on"  # a run's file listing the content digests of the samples it trained on
_DIGEST_HEX = 16  # 64 bits of each sample's SHA-256: 1.6 MB for 100,000 samples, collisions ~1e-10


def trained_on_digests(parts: Sequence[LabelledData]) -> dict:
    """What ``trained_on.json`` holds: the shortened content digest of every sample a fit used
    (training and validation), so that evaluating on them later can be noticed."""
    from .features import content_digests

    return {"sha256_prefix": sorted({d.hex()[:_DIGEST_HEX] for part in parts for d in content_digests(part)})}


def training_overlap(run_dir: str | Path, data: LabelledData) -> list[int] | None:
    """Positions of ``data``'s samples whose content the run trained on; None when the run does not
    record it (runs of older versions)."""
    from .features import content_digests
    from .integrity import read_json

    path = Path(run_dir) / f"{TRAINED_ON}.json"
    if not path.is_file():
        return None
    known = set(read_json(path, dict).get("sha256_prefix", []))
    return [i for i, digest in enumerate(content_digests(data)) if digest.hex()[:_DIGEST_HEX] in known]


@dataclass
class Evaluation:
    """What :func:`evaluate_run` measured: the metrics, how many samples the run had trained on,
    and whether those were left out."""

    metrics: dict
    evaluated: LabelledData
    overlap: int | None
    excluded: bool


def run_modality(run_dir: str | Path) -> str | None:
    """What a run's model takes, "image" or "text", from its contract; None when unreadable
    (loading the run says why)."""
    try:
        return json.loads((Path(run_dir) / "contract.json").read_text(encoding="utf-8"))["modality"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def evaluate_run(run_dir: str | Path, data: LabelledData, *, exclude_train: bool = False, device: str = "auto",
                 cache_dir: str | Path | None = None, progress: Progress | None = None,
                 tta: bool = False) -> Evaluation:
    """Evaluate a saved run on labelled ``data``, noticing samples it trained on (their scores
    overstate it); ``exclude_train`` scores only the others; ``tta`` turns test-time augmentation on
    for a run fitted without it (a run fitted with it always uses it). A bundle ``headstart export`` wrote is
    scored as deployed: ONNX Runtime runs its model (float or int8)."""
    from .ensemble import load
    from .runtime import is_bundle

    overlap = training_overlap(run_dir, data)
    if exclude_train and overlap is None:
        raise DataError(f"{run_dir} does not record what it trained on (it is older than this version); "
                        "`--exclude-train` cannot tell those samples apart.")
    if exclude_train and overlap:
        keep = sorted(set(range(len(data))) - set(overlap))
        if not keep:
            raise DataError(f"Every sample of {data.source} is one the run {run_dir} trained on: nothing is left "
                            "to evaluate with `--exclude-train`.")
        data = data.subset(keep)
    if is_bundle(run_dir):
        metrics = _bundle_metrics(Path(run_dir), data, tta)
    else:
        model = load(run_dir, device=device, cache_dir=cache_dir, progress=progress)
        if tta:
            model.set_params(tta=True)
        metrics = model.evaluate(data)
    return Evaluation(metrics, data, None if overlap is None else len(overlap), exclude_train)


def _bundle_metrics(folder: Path, data: LabelledData, tta: bool) -> dict:
    """A run's metrics, from an exported bundle's probabilities."""
    from .evaluation import classification_metrics
    from .runtime import Bundle

    bundle = Bundle.load(folder)
    bundle.check_tta(tta)
    data = data.with_classes(bundle.labels)
    return classification_metrics(data.y, bundle.predict_proba(data.items).argmax(1), bundle.labels)


# -- finishing a search -----------------------------------------------------------------------------
def save_search(result, out_dir: str | Path, *, data_summary: dict | None = None,
                weights: str | Path | None = None, title: str | None = None) -> dict:
    """Write a search's best config (``config.yaml``, which ``fit --config`` reads), its
    trials (``tuning.json``) and ``report.html`` to ``out_dir``; return the summary written."""
    import yaml

    from .report import write_report

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {**result.summary(), **({"data": data_summary} if data_summary is not None else {})}
    config = result.run_config()
    if weights:
        config["backbone"]["weights"] = str(weights)
    write_text_atomic(out_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    write_text_atomic(out_dir / "tuning.json", json.dumps(summary, indent=1))
    write_report(out_dir, title or f"headstart search: {result.settings.study}")
    return summary


def refit_best(result, train: LabelledData, test: LabelledData, run_dir: str | Path, *,
               data_summary: dict | None = None, transfer_options: dict | None = None,
               progress: Progress | None = None) -> dict:
    """Train a search's best config on all of ``train`` (the search's train + val), evaluate
    it on ``test`` and save it as a run in ``run_dir``; return the test metrics.

    A network trains for the best trial's best epoch count without early stopping; its
    validation curve is in-sample here (the val part is inside ``train``).
    """
    from .strategies import get_strategy

    config = get_strategy(result.strategy).make_config(result.run_config(refit=True)["strategy_config"])
    model = refit_on_all(train, result.model, result.strategy, config, seed=result.settings.seed,
                         val_fraction=result.settings.val_fraction, progress=progress, **(transfer_options or {}))
    metrics, predictions = model.evaluate_with_predictions(test)
    summary = {**result.summary(), **({"data": data_summary} if data_summary is not None else {})}
    documents = {"test": metrics, **({"data": data_summary} if data_summary is not None else {})}
    model.save(run_dir, metrics=documents, extra={"predictions": predictions, "tuning": summary},
               finish=with_report(run_dir))
    return metrics


def refit_on_all(train: LabelledData, model: str, strategy: str, config, *, seed: int = 0, val_fraction: float = 0.15,
                 callbacks: Sequence = (), **transfer_options: Any):
    """A fitted ``Transfer`` of ``strategy`` with ``config`` (chosen before: a network's best epoch
    count, without early stopping) trained on every sample of ``train``. Its validation curve is
    in-sample (the usual share of ``train``), so it only shows progress and chooses nothing."""
    from .transfer import Transfer

    _, val_idx = stratified_split(train.y, [val_fraction], seed, class_names=train.classes)
    estimator = Transfer(model, strategy, config=config, seed=seed, val_fraction=val_fraction, **transfer_options)
    return estimator.fit(train, train.subset(val_idx), callbacks=callbacks)


def trial_trackers(track: str | None, track_uri: str | None, study: str):
    """``(trial_callbacks, after_trial)`` for :func:`~headstart.tuning.tune` that log each
    trial as its own tracker run (mlflow or tensorboard), or (None, None) without ``track``."""
    from .tracking import open_tracker, require_tracker

    if track is None:
        return None, None
    require_tracker(track)  # before the search starts, not at its first trial
    trackers: dict[int, object] = {}

    def trial_callbacks(trial, config):
        if trial.number not in trackers:
            tracker = open_tracker(track, f"{study}-trial-{trial.number}", uri=track_uri, experiment=study)
            tracker.log_params({"trial": trial.number, **asdict(config)})
            trackers[trial.number] = tracker
        return [trackers[trial.number]]

    def after_trial(study_, trial) -> None:
        tracker = trackers.pop(trial.number, None)
        if tracker is not None:
            tracker.log_metrics({"objective": trial.value} if trial.value is not None else {})
            tracker.close()

    return trial_callbacks, after_trial


# -- domain adaptation ------------------------------------------------------------------------------
@dataclass
class AdaptRunResult:
    """What :func:`adapt_run` made. ``baseline`` and ``adapted`` are rows of
    :func:`~headstart.comparison.compare_adaptation` (method, strategy, metrics, train_seconds,
    transfer), measured on ``evaluated_on``; ``source_metrics`` are the adapted model's on the
    source's test split."""

    baseline: dict
    adapted: dict
    source_metrics: dict
    train: LabelledData
    evaluated_on: LabelledData
    out_dir: Path

    @property
    def transfer(self):
        return self.adapted["transfer"]


def adapt_run(source: LabelledData, target: LabelledData, out_dir: str | Path, method: str, *,
              evaluate_on: LabelledData | None = None, test: float = 0.2, seed: int = 0, model: str | None = None,
              config: object | dict | None = None, adapt_options: dict | None = None,
              progress: Progress | None = None, **transfer_options: Any) -> AdaptRunResult | None:
    """Adapt a model trained on labelled ``source`` data to unlabelled ``target`` data with
    ``method``, beside the source-only model of the same strategy, and save the adapted run.

    ``config`` configures the method's strategy (its default, the first it names) and
    ``adapt_options`` the method. Both models are measured on ``evaluate_on`` (labelled
    target data) or, without it, on the source's test split (a ``test`` share). Under a
    launcher, rank 0 saves and returns the result, the other ranks return None.
    """
    check_output_dir(out_dir, [source.source, target.source])
    from .adaptation import get_adaptation
    from .comparison import compare_adaptation

    strategy = get_adaptation(method).strategies[0]
    train, source_test = source.split(test=test, seed=seed)
    judged_on = evaluate_on if evaluate_on is not None else source_test
    if not _share_adaptation(strategy, model, [source, target, evaluate_on], transfer_options):
        return None
    rows = compare_adaptation(train, target, [method], evaluate_on=judged_on, model=model,
                              configs={strategy: config} if config is not None else None,
                              adapt_options={method: adapt_options} if adapt_options else None,
                              seed=seed, progress=progress, **transfer_options)
    baseline, adapted = rows[0], rows[-1]
    fitted = adapted["transfer"]
    # each source test sample's prediction, as fit records them: the report's mistakes, export's parity check
    source_metrics, predictions = (fitted.evaluate_with_predictions(source_test) if evaluate_on is not None
                                   else (adapted["metrics"], adapted["predictions"]))
    if not distributed.current().is_main:
        return None
    fitted.save(out_dir, metrics={"test": source_metrics,
                                  "target": adapted["metrics"] if evaluate_on is not None else None,
                                  "source_only": baseline["metrics"], "data": source.summary(),
                                  "target_data": target.summary()},
                extra={"predictions": predictions}, finish=with_report(out_dir))
    return AdaptRunResult(baseline, adapted, source_metrics, train, judged_on, Path(out_dir))
