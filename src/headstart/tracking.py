"""Experiment tracking: parameters, per-epoch metrics and artifacts to MLflow or TensorBoard.

A tracker is a training :class:`~headstart.training.Callback` (it logs each epoch's row) with
three more calls for what happens around training: ``log_params``, ``log_metrics`` and
``log_artifacts``. Neither package is required by headstart; asking for one that is not
installed is a :class:`ConfigError` that gives the pip command.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .training import Callback

__all__ = ["Tracker", "MLflowTracker", "TensorBoardTracker", "open_tracker", "require_tracker", "TRACKERS", "flatten"]

log = logging.getLogger(__name__)
TRACKERS = ("mlflow", "tensorboard")
_PACKAGES = {"mlflow": ("mlflow", "mlflow-skinny"), "tensorboard": ("tensorboard", "tensorboard")}


def flatten(values: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: trackers take flat key-value parameters."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _numbers(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in flatten(metrics).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


class Tracker(Callback):
    """Base of the trackers: logs every epoch's training and validation metrics."""

    def log_params(self, params: dict) -> None:
        raise NotImplementedError

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        raise NotImplementedError

    def log_artifacts(self, folder: str | Path) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def on_epoch_end(self, trainer, epoch: int, row: dict) -> None:
        self.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)


class MLflowTracker(Tracker):
    """One MLflow run in ``experiment``, through an ``MlflowClient`` (no global active run)."""

    def __init__(self, uri: str, experiment: str, run_name: str, artifact_location: str | None = None) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(
            experiment, artifact_location=artifact_location)
        self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
        self.uri = uri

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(k, str(v)[:6000]) for k, v in flatten(params).items()])

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step or 0) for k, v in _numbers(metrics).items()])

    def log_artifacts(self, folder: str | Path) -> None:
        self.client.log_artifacts(self.run_id, str(folder))

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class TensorBoardTracker(Tracker):
    """Event files in ``log_dir``: scalars per epoch; parameters and small files as text."""

    def __init__(self, log_dir: str | Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        self.params: dict[str, Any] = {}
        self.last: dict[str, float] = {}

    def log_params(self, params: dict) -> None:
        self.params.update(flatten(params))
        table = "\n".join(f"| {k} | {v} |" for k, v in self.params.items())
        self.writer.add_text("parameters", "| parameter | value |\n|---|---|\n" + table)

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        for key, value in _numbers(metrics).items():
            self.writer.add_scalar(key, value, step or 0)
            self.last[key] = value

    def log_artifacts(self, folder: str | Path) -> None:
        """TensorBoard stores no files: the run's small text files are logged as text."""
        for file in sorted(Path(folder).iterdir()):
            if file.suffix in (".json", ".yaml", ".csv") and file.stat().st_size < 200_000:
                text = file.read_text()
                if file.suffix == ".json":
                    text = json.dumps(json.loads(text), indent=1)
                self.writer.add_text(f"files/{file.name}", "```\n" + text + "\n```")

    def close(self) -> None:
        hparams = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in self.params.items()}
        if hparams and self.last:
            # add_hparams also writes its metrics as scalars: its own names keep the curves clean
            self.writer.add_hparams(hparams, {f"hparams/{k}": v for k, v in self.last.items()}, run_name=".")
        self.writer.close()


def require_tracker(kind: str) -> None:
    """Raise a :class:`ConfigError` naming the pip command when ``kind`` is unknown or not installed."""
    if kind not in TRACKERS:
        raise ConfigError(f"The 'track' option must be one of {', '.join(TRACKERS)}. Got {kind!r} instead.")
    module, package = _PACKAGES[kind]
    try:
        __import__(module)
    except ImportError:
        raise ConfigError(f"`--track {kind}` needs the {module} package, which is not installed: "
                          f"`pip install {package}`.") from None


def open_tracker(kind: str | None, run_name: str, *, uri: str | None = None,
                 experiment: str = "headstart") -> Tracker | None:
    """A tracker of ``kind`` (mlflow or tensorboard), or None when ``kind`` is None.

    ``uri``: for MLflow a tracking server URL, a database URL, or a folder (default
    ``./mlruns``, holding ``mlflow.db`` and the artifacts); for TensorBoard the folder
    the event files go under (default ``./tensorboard``), one sub-folder per run.
    """
    if kind is None:
        return None
    require_tracker(kind)
    if kind == "tensorboard":
        return TensorBoardTracker(Path(uri or "tensorboard") / run_name)
    if uri is None or "://" not in uri:
        folder = Path(uri or "mlruns").resolve()
        folder.mkdir(parents=True, exist_ok=True)
        return MLflowTracker(f"sqlite:///{folder / 'mlflow.db'}", experiment, run_name,
                             artifact_location=(folder / "artifacts").as_uri())
    return MLflowTracker(uri, experiment, run_name)
