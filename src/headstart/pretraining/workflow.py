"""``headstart pretrain`` as a Python call: open the data, pre-train, probe, write the run.

:func:`pretrain` continues a backbone's pre-training on your data (or fine-tunes it on a labelled
source set) and writes a run that ``--model run:PATH`` takes as a backbone. While it trains, its
arguments and last checkpoint live in the run's work dir (``.RUN.unfinished``, as for ``fit``);
after an interruption :func:`resume_pretraining` continues where it stopped; the run itself is
written atomically, its report inside, only when training is done.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from .. import distributed
from ..backbones import build_backbone, default_backbone
from ..data.reading import ReadOptions
from ..devices import default_workers, resolve_device
from ..errors import ConfigError, DataError, HeadstartError
from ..runs import check_output_dir, write_text_atomic
from ..data.opening import open_data, open_unlabelled
from ..workflows import (CHECKPOINT, DATA_FILE, data_fingerprint, held_workspace,
                         saved_arguments, with_report, work_dir)
from .configs import PretrainConfig
from .job import Pretrained, PretrainJob
from .methods import get_method
from .output import pretraining_document, save_pretrained
from .probe import probe_gain

__all__ = ["PretrainArgs", "PretrainResult", "Pretraining", "pretrain", "resume_pretraining"]

ARGS_FILE = "pretrain.json"
Progress = Callable[..., None]


@dataclass
class PretrainArgs:
    """Everything a pre-training needs to (re)start, saved as ``pretrain.json`` in its work dir.

    ``options`` are the method's config fields; ``eval_data`` labelled data for the linear probe
    before and after (``test``: the share of it the probe is measured on); ``batch_size``,
    ``workers``, ``device`` how features are extracted; ``reading`` how files are read.
    """

    data: str
    out_dir: str
    method: str
    model: str | None = None
    options: dict = field(default_factory=dict)
    seed: int = 0
    weights: str | None = None
    eval_data: str | None = None
    eval_test: float = 0.3
    text_column: str = "text"
    label_column: str | None = "label"
    batch_size: int = 64
    workers: int | None = None
    device: str = "auto"
    cache_dir: str | None = None
    reading: dict = field(default_factory=dict)

    @classmethod
    def create(cls, data: str | Path, out_dir: str | Path, method: str, **settings: Any) -> PretrainArgs:
        """From any of the fields (a config object as ``options`` too); paths become strings."""
        unknown = sorted(set(settings) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"{', '.join(unknown)} is not a setting of pretrain; its settings are: "
                              f"{', '.join(f.name for f in fields(cls))}.")
        options = settings.pop("options", None)
        options = asdict(options) if is_dataclass(options) else dict(options or {})
        paths = {k: str(v) for k, v in settings.items() if k in ("weights", "cache_dir", "eval_data") and v is not None}
        return cls(data=str(data), out_dir=str(out_dir), method=method, options=options, **{**settings, **paths})


@dataclass
class PretrainResult:
    """What :meth:`Pretraining.run` made: the run, the backbone it continued, the loss per epoch, and
    ``pretraining.json``'s content (cost, probe before/after)."""

    out_dir: Path
    method: str
    model: str
    history: list[dict]
    document: dict
    resumed: bool = False

    @property
    def backbone_name(self) -> str:
        """What ``--model`` takes to use the result: ``run:<absolute path>``."""
        return f"run:{self.out_dir.resolve()}"


class Pretraining:
    """One ``headstart pretrain``: the method's config is checked and the data opened at construction;
    :meth:`run` trains, probes and writes the run."""

    def __init__(self, args: PretrainArgs, *, resumed: bool = False) -> None:
        self.args, self.resumed = args, resumed
        self.device = resolve_device(args.device)  # this rank's own GPU once `run` joins a launcher's job
        self.method = get_method(args.method)(dict(args.options))
        read = ReadOptions(**args.reading)
        if self.method.labelled:
            self.data = open_data(args.data, args.text_column, args.label_column, reading=read)
        else:
            self.data = open_unlabelled(args.data, args.text_column, reading=read)
        self.eval_data = open_data(args.eval_data, args.text_column, args.label_column, reading=read) \
            if args.eval_data else None

    @classmethod
    def resume(cls, out_dir: str | Path) -> Pretraining:
        """The interrupted pre-training that was to be written to ``out_dir``, from its saved arguments."""
        known = {f.name for f in fields(PretrainArgs)}
        args = saved_arguments(out_dir, ARGS_FILE, "pre-training",
                               lambda values: PretrainArgs(**{k: v for k, v in values.items() if k in known}))
        return cls(args, resumed=True)

    @property
    def out_dir(self) -> Path:
        return Path(self.args.out_dir)

    def run(self, progress: Progress | None = None) -> PretrainResult | None:
        """Pre-train (continuing from the checkpoint when resumed), probe, write the run.

        Under a launcher (torchrun, ``--nproc``) every rank calls it and trains on its share of each
        epoch; rank 0 alone checks the work dir, probes and writes the run (the others return None).
        """
        inputs = [self.args.data, *([self.args.eval_data] if self.args.eval_data else [])]
        check_output_dir(self.out_dir, inputs)
        self.device = distributed.join(resolve_device(self.args.device))
        if not distributed.current().is_main:
            return self._follow()
        with held_workspace(self.out_dir, CHECKPOINT, refused=_tell_followers) as workspace:
            return self._run_locked(workspace, progress)

    def _follow(self) -> None:
        """A rank other than 0: wait for rank 0's go (or its refusal), then train; rank 0 writes."""
        failure = distributed.broadcast(None)
        if failure is not None:
            raise failure
        self.method.train(self._job(work_dir(self.out_dir), None))

    def _check_workspace(self, workspace: Path, fingerprint: str) -> None:
        """A new pre-training never overwrites an interrupted one's checkpoint; a resumed one needs its data."""
        if not self.resumed and (workspace / CHECKPOINT).is_file():
            raise ConfigError(f"`--out {self.out_dir}` has an interrupted pre-training with a checkpoint in "
                              f"{workspace}; continue it with `headstart pretrain --resume {self.out_dir}`, or remove "
                              f"{workspace} to start over.")
        saved = workspace / DATA_FILE
        if self.resumed and saved.is_file() and saved.read_text() != fingerprint:
            raise DataError(f"The data at {self.args.data} changed since the interrupted pre-training to "
                            f"{self.out_dir} started; restore it, or remove {workspace} and start again.")

    def _job(self, workspace: Path, progress: Progress | None) -> PretrainJob:
        a = self.args
        backbone = build_backbone(a.model or default_backbone(self.data.modality), weights=a.weights)
        self.method.check(self.data, backbone.contract.modality)
        train, val, test = self.method.split(self.data, a.seed)
        return PretrainJob(backbone, backbone.name, a.weights, train, val, self.method.config, test=test, seed=a.seed,
                           device=self.device, num_workers=default_workers(a.workers),
                           checkpoint=workspace / CHECKPOINT, resume=self.resumed, cache_dir=a.cache_dir,
                           progress=progress)

    def _run_locked(self, workspace: Path, progress: Progress | None) -> PretrainResult:
        fingerprint = data_fingerprint(self.data)
        try:
            self._check_workspace(workspace, fingerprint)
        except HeadstartError as exc:
            _tell_followers(exc)
            raise
        _tell_followers(None)  # they may start
        write_text_atomic(workspace / ARGS_FILE, json.dumps(asdict(self.args), indent=1))
        write_text_atomic(workspace / DATA_FILE, fingerprint)
        job = self._job(workspace, progress)
        started = time.perf_counter()
        result = self.method.train(job)
        seconds = time.perf_counter() - started
        probe = self._probe(job, result, progress) if self.eval_data is not None else None
        document = pretraining_document(self.method, job.model, self.data, result, seconds, probe)
        save_pretrained(self.out_dir, job.backbone, job.model, job.weights, result, document, self.args.seed,
                        with_report(self.out_dir))
        shutil.rmtree(workspace, ignore_errors=True)
        return PretrainResult(self.out_dir, self.method.name, job.model, result.history, document, self.resumed)

    def _probe(self, job: PretrainJob, result: Pretrained, progress: Progress | None) -> dict:
        """The linear probe on the labelled ``eval_data`` with the base backbone and with the trained one."""
        a = self.args
        train, test = self.eval_data.split(test=a.eval_test, seed=a.seed)
        base = build_backbone(job.model, weights=a.weights)
        return probe_gain(base, result.module, train, test, seed=a.seed, cache_dir=a.cache_dir,
                          batch_size=a.batch_size, num_workers=job.num_workers, device=job.device,
                          progress=(lambda done, total: progress("probe features", done, total)) if progress else None)


def _tell_followers(failure: HeadstartError | None) -> None:
    """Rank 0's go (None) or refusal to the other ranks of a distributed pre-training."""
    if distributed.current().size > 1:
        distributed.broadcast(failure)


def pretrain(data: str | Path, out_dir: str | Path, *, method: str, model: str | None = None,
             config: PretrainConfig | dict | None = None, progress: Progress | None = None,
             **settings: Any) -> PretrainResult:
    """Pre-train ``model`` further on ``data`` with ``method`` and write the run ``out_dir``, which
    ``--model run:OUT`` / ``Transfer("run:OUT")`` then take as a backbone, exactly as
    ``headstart pretrain`` does.

    ``method``: ``tsdae`` or ``simcse`` (texts, one per line or a table's text column), ``simclr``
    (images: a folder, class folders or not), ``supervised`` (labelled data: fine-tuning);
    ``config``: the method's options (:mod:`headstart.pretraining.configs`). ``settings`` are the
    other fields of :class:`PretrainArgs`: ``seed``, ``weights``, ``eval_data`` (labelled data for a
    linear probe before and after), ``device``... If it is interrupted, :func:`resume_pretraining`
    continues it from its last epoch.
    """
    return Pretraining(PretrainArgs.create(data, out_dir, method, model=model, options=config, **settings)).run(progress)


def resume_pretraining(out_dir: str | Path, *, progress: Progress | None = None) -> PretrainResult:
    """Continue an interrupted :func:`pretrain` (or ``headstart pretrain``) to ``out_dir``."""
    return Pretraining.resume(out_dir).run(progress)
