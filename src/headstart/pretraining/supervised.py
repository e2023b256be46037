"""``supervised`` pre-training: the ``finetune`` strategy on a labelled source set.

The fitted model is saved as a ``fit`` run (head, test metrics and predictions included), so it is
a classifier of the source classes and, through ``run:PATH``, the backbone of the next task.
"""

from __future__ import annotations

from ..strategies.configs import FinetuneConfig
from ..transfer import Transfer
from .job import Pretrained, PretrainJob

__all__ = ["finetune_config", "train_supervised"]


def finetune_config(config) -> FinetuneConfig:
    """The ``finetune`` options a :class:`~headstart.pretraining.configs.SupervisedConfig` asks for."""
    shared = ("epochs", "lr", "weight_decay", "batch_size", "warmup_epochs", "patience", "clip_norm")
    return FinetuneConfig(**{name: getattr(config, name) for name in shared})


def train_supervised(job: PretrainJob) -> Pretrained:
    """Fine-tune ``job.model`` on ``job.train`` (its validation share chosen by the fit), measure it on
    ``job.test``; the fit checkpoints each epoch and resumes like ``headstart fit``."""
    estimator = Transfer(job.model, "finetune", config=finetune_config(job.config), weights=job.weights,
                         cache_dir=job.cache_dir, num_workers=job.num_workers, device=str(job.device), seed=job.seed,
                         progress=job.progress)
    estimator.fit(job.train, checkpoint=job.checkpoint, resume=job.resume, callbacks=job.callbacks)
    metrics, predictions = estimator.evaluate_with_predictions(job.test)
    info = {**estimator.fit_info_, "epochs_run": len(estimator.history_),
            "samples_seen": estimator.fit_info_["train_samples"] * len(estimator.history_)}
    return Pretrained(estimator.net_.backbone, estimator.history_, info, estimator,
                      {"test": metrics, "predictions": predictions})
