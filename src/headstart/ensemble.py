"""``Ensemble``: several fitted models on one backbone, predicting the mean of their class probabilities.

``auto`` keeps one when the average scores better on validation than its best member. It saves as
one run (every member's tensors in one safetensors file, each name prefixed by its member, and each
member's config in config.yaml), which :func:`load`, ``evaluate``, ``predict``, ``export`` and
``serve`` take as they take one model. Members share one backbone, so one input contract prepares
the inputs of all; the exported graph holds every member's network and averages them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ._version import __version__
from .contract import InputContract
from .data import LabelledData
from .data.opening import Inputs, as_inputs
from .errors import ConfigError, DataError
from .runs import RunFiles, read_run, write_run
from .transfer import ENSEMBLE, Classifier, Progress, Transfer, load_run

__all__ = ["Ensemble", "MeanProbabilities", "load", "ENSEMBLE"]

COMBINE = "mean of the members' class probabilities"


class MeanProbabilities(nn.Module):
    """The members' networks as one network whose softmax is the mean of theirs: it returns the log
    of that mean, so anything applying a softmax to a network's output (the ONNX export) gets it."""

    def __init__(self, nets: Sequence[nn.Module]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, inputs):
        mean = torch.stack([torch.softmax(net(inputs).float(), dim=1) for net in self.nets]).mean(0)
        return torch.log(mean.clamp_min(1e-30))


def _member_prefix(index: int) -> str:
    return f"member{index}."


class Ensemble(Classifier):
    """Fitted :class:`Transfer` models of one backbone and one set of classes, averaged.

    Parameters
    ----------
    members: at least two fitted models; every one predicts with its own strategy (a linear probe
        from cached features, a fine-tuned network, a LoRA adapter), and their probabilities are averaged.
    """

    def __init__(self, members: Sequence[Transfer], metrics: dict | None = None) -> None:
        members = list(members)
        if len(members) < 2:
            raise ConfigError(f"An ensemble needs at least two fitted models. Got {len(members)}.")
        first = members[0]
        for member in members:
            member._check_fitted()
            if member.classes_ != first.classes_:
                raise ConfigError(f"The members of an ensemble must predict the same classes: {first.classes_} "
                                  f"against {member.classes_}.")
            if member.model_name_ != first.model_name_ or member.contract_.to_dict() != first.contract_.to_dict():
                raise ConfigError(f"The members of an ensemble must share one backbone (one input contract, one "
                                  f"exported input): {first.model_name_} against {member.model_name_}.")
        if len({member.tta for member in members}) > 1:  # the exported graph averages views for all or none
            raise ConfigError("The members of an ensemble must all use test-time augmentation (`tta`) or none.")
        self.members, self.metrics_ = members, metrics or {}

    @property
    def classes_(self) -> list[str]:
        return self.members[0].classes_

    @property
    def contract_(self) -> InputContract:
        return self.members[0].contract_

    @property
    def backbone_(self):
        """The first member's backbone: what every member's inputs are prepared for (tokenizer, contract)."""
        return self.members[0].backbone_

    @property
    def model_name_(self) -> str:
        return self.members[0].model_name_

    @property
    def tta(self) -> bool:
        return self.members[0].tta  # every member's, as __init__ checks and the setter keeps

    @tta.setter
    def tta(self, value: bool) -> None:
        for member in self.members:
            member.tta = value

    @property
    def net_(self) -> nn.Module:
        """Every member's network, as one whose softmax is the ensemble's probabilities."""
        return MeanProbabilities([member.net_ for member in self.members])

    def set_params(self, **params) -> Ensemble:
        """Change a parameter of every member (device, cache, workers, ``tta``)."""
        for member in self.members:
            member.set_params(**params)
        return self

    def deployable(self) -> Ensemble:
        """Every member's adapter folded into its backbone (see :meth:`Transfer.deployable`)."""
        for member in self.members:
            member.deployable()
        return self

    def merge(self) -> Ensemble:
        """Fold the adapters of the lora / bitfit members into their backbones."""
        if not any(member.strategy_.adapter for member in self.members):
            raise ConfigError("No member of this ensemble is a lora or bitfit model: there is no adapter to merge.")
        return self.deployable()

    def predict_proba(self, data: Inputs) -> np.ndarray:
        """The mean of the members' class probabilities (columns in the order of ``classes_``)."""
        data = as_inputs(data, self.members[0].contract_.modality)  # read once for every member
        return np.mean([member.predict_proba(data) for member in self.members], axis=0)

    def run_config(self) -> dict:
        """What ``config.yaml`` records: the shared backbone, and each member's own config."""
        first = self.members[0]
        config = {"headstart_version": __version__,
                  "backbone": {"name": first.model_name_, "weights": str(first.weights) if first.weights else None,
                               "weights_digest": first.backbone_.weights_digest},
                  "strategy": ENSEMBLE, "seed": first.seed,
                  ENSEMBLE: {"combine": COMBINE, "members": [member.run_config() for member in self.members]}}
        return {**config, **({"tta": True} if self.tta else {})}

    def save(self, path: str | Path, metrics: dict | None = None, extra: dict | None = None,
             finish: Callable[[Path], object] | None = None) -> Path:
        """Write one run directory holding every member (see :meth:`Transfer.save`)."""
        tensors = {_member_prefix(i) + name: tensor for i, member in enumerate(self.members)
                   for name, tensor in member.checkpoint_tensors().items()}
        run = RunFiles(self.run_config(), self.classes_, self.contract_.to_dict(), metrics or {}, tensors, extra or {})
        return write_run(path, run, finish)

    @classmethod
    def from_run(cls, run: RunFiles, path: str | Path, *, device: str = "auto", cache_dir: str | Path | None = None,
                 progress: Progress | None = None) -> Ensemble:
        """The ensemble a run read with ``runs.read_run`` holds; each member is checked as a run is."""
        members = (run.config.get(ENSEMBLE) or {}).get("members")
        if not isinstance(members, list) or len(members) < 2 or not all(isinstance(m, dict) for m in members):
            raise DataError(f"{path}/config.yaml is damaged: an ensemble needs `{ENSEMBLE}: members:` listing at "
                            "least two members' configs.")
        loaded = []
        for index, config in enumerate(members):
            prefix = _member_prefix(index)
            tensors = {name[len(prefix):]: t for name, t in run.tensors.items() if name.startswith(prefix)}
            member = RunFiles(config, run.labels, run.contract, {}, tensors)
            loaded.append(load_run(member, f"{path} (member {index + 1})", device=device, cache_dir=cache_dir,
                                   progress=progress))
        return cls(loaded, metrics=run.metrics)


def load(path: str | Path, *, device: str = "auto", cache_dir: str | Path | None = None,
         progress: Progress | None = None) -> Transfer | Ensemble:
    """Load a saved run as a fitted :class:`Transfer` (or :class:`Ensemble`), checking the backbone's
    weights match what it was trained with."""
    run = read_run(path)
    if not run.labels:
        raise ConfigError(f"{path} is a pre-trained backbone (`headstart pretrain`), not a classifier: it has no "
                          f"classes to predict. Fit a model on it with `--model run:{path}`.")
    if run.config.get("strategy") == ENSEMBLE:
        return Ensemble.from_run(run, path, device=device, cache_dir=cache_dir, progress=progress)
    return load_run(run, path, device=device, cache_dir=cache_dir, progress=progress)
