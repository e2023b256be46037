"""The pre-training methods: one registered class each, owning its config and how it trains.

A method says which data it takes (``modality``; ``labelled``) and trains a backbone in
:meth:`PretrainMethod.train`. Its heavy parts (torch, sentence-transformers, lightly) are imported
there, so listing the methods and their options (the command line) loads none of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from ..errors import ConfigError, DataError
from ..registry import Registry
from .configs import METHOD_CONFIGS, PretrainConfig
from .job import Pretrained, PretrainJob

if TYPE_CHECKING:
    from ..data import LabelledData

__all__ = ["PretrainMethod", "register_method", "get_method", "method_names"]


class PretrainMethod:
    """How a backbone is pre-trained further. Subclasses set ``name``, ``config_class``, ``modality``
    (None: any) and ``labelled``, and implement :meth:`train`."""

    name: ClassVar[str]
    config_class: ClassVar[type[PretrainConfig]]
    modality: ClassVar[str | None] = None
    labelled: ClassVar[bool] = False

    def __init__(self, config: PretrainConfig | dict | None = None) -> None:
        self.config = self.make_config(config)

    @classmethod
    def make_config(cls, config: PretrainConfig | dict | None) -> PretrainConfig:
        """The typed config from a config object, a dict of its fields, or None (the defaults); a field
        the method does not have is an error naming its options."""
        if config is None:
            return cls.config_class()
        if isinstance(config, dict):
            foreign = sorted(set(config) - set(cls.config_class.__dataclass_fields__))
            if foreign:
                raise ConfigError(f"{', '.join(foreign)} does not apply to the {cls.name} method; its options are: "
                                  f"{', '.join(cls.config_class.__dataclass_fields__)}.")
            return cls.config_class(**config)
        if type(config) is not cls.config_class:
            raise ConfigError(f"The config of {cls.name} must be a {cls.config_class.__name__}. "
                              f"Got {type(config).__name__}.")
        return config

    def check(self, data: LabelledData, modality: str) -> None:
        """Refuse, before any training, data or a backbone this method does not take."""
        if self.modality is not None and modality != self.modality:
            raise ConfigError(f"The {self.name} method pre-trains {self.modality} backbones; the backbone takes "
                              f"{modality}. Choose a method for {modality}: "
                              f"{', '.join(m for m in method_names() if get_method(m).modality in (None, modality))}.")
        if data.modality != modality:
            raise DataError(f"{data.source} holds {data.modality} data, but the backbone takes {modality}.")
        if self.labelled and data.labels is None:
            raise DataError(f"The {self.name} method trains on labelled data; {data.source} has no labels. Give an "
                            "image folder with class folders or a table with a label column.")

    def split(self, data: LabelledData, seed: int) -> tuple[LabelledData, LabelledData | None, LabelledData | None]:
        """(train, validation or None, test or None): by default a random ``val_fraction`` of the samples
        is held out for the objective's validation loss."""
        import numpy as np

        share = getattr(self.config, "val_fraction", 0.0)
        held = round(share * len(data))
        if share > 0 and held < 2:
            held = 2  # one sample has no batch-mates to contrast with
        if len(data) - held < 2:
            raise DataError(f"{data.source} has {len(data)} usable samples; pre-training needs at least "
                            f"{held + 2} (2 to train on{f', {held} to validate on' if held else ''}).")
        order = np.random.default_rng(seed).permutation(len(data))
        return data.subset(np.sort(order[held:])), (data.subset(np.sort(order[:held])) if held else None), None

    def train(self, job: PretrainJob) -> Pretrained:
        raise NotImplementedError


_METHODS: Registry[PretrainMethod] = Registry("pre-training method")
# Class decorator: make a method available by its ``name`` (API and `headstart pretrain --method`).
register_method = _METHODS.register
method_names = _METHODS.names
get_method = _METHODS.get


class _SelfSupervised(PretrainMethod):
    """A method that trains an objective on unlabelled data with the loop (objective.py)."""

    def train(self, job: PretrainJob) -> Pretrained:
        from .objective import train_objective

        objective, loaders = self.objective(job)
        return train_objective(job, objective, *loaders)

    def objective(self, job: PretrainJob):
        """The objective module (holding the backbone) and its (train, validation) loaders."""
        raise NotImplementedError


@register_method
class Tsdae(_SelfSupervised):
    """Denoising auto-encoder on texts (TSDAE)."""

    name, config_class, modality = "tsdae", METHOD_CONFIGS["tsdae"], "text"

    def objective(self, job: PretrainJob):
        from .text import TextViews, text_loaders, tsdae_objective

        return tsdae_objective(job), text_loaders(job, TextViews.of(job, deletion=self.config.deletion))


@register_method
class Simcse(_SelfSupervised):
    """Unsupervised SimCSE: dropout noise as the only augmentation."""

    name, config_class, modality = "simcse", METHOD_CONFIGS["simcse"], "text"

    def objective(self, job: PretrainJob):
        from .text import TextViews, simcse_objective, text_loaders

        return simcse_objective(job), text_loaders(job, TextViews.of(job, deletion=None))


@register_method
class Mlm(_SelfSupervised):
    """Masked-language modelling, through the encoder's own masked-LM head."""

    name, config_class, modality = "mlm", METHOD_CONFIGS["mlm"], "text"

    def objective(self, job: PretrainJob):
        from .text import MaskedTexts, mlm_objective, text_loaders

        return mlm_objective(job), text_loaders(job, MaskedTexts.of(job, mask=self.config.mask))


@register_method
class Simclr(_SelfSupervised):
    """SimCLR on images, with the backbone's input size and normalisation."""

    name, config_class, modality = "simclr", METHOD_CONFIGS["simclr"], "image"

    def objective(self, job: PretrainJob):
        from .images import image_loaders, simclr_objective

        return simclr_objective(job), image_loaders(job)


@register_method
class Supervised(PretrainMethod):
    """Fine-tuning on a labelled source set, kept as a backbone."""

    name, config_class, labelled = "supervised", METHOD_CONFIGS["supervised"], True

    def split(self, data: LabelledData, seed: int) -> tuple[LabelledData, LabelledData | None, LabelledData | None]:
        """(train, None, test): a stratified test share; the fit takes its validation share out of train."""
        train, test = data.split(test=self.config.test, seed=seed)
        return train, None, test

    def train(self, job: PretrainJob) -> Pretrained:
        from .supervised import train_supervised

        return train_supervised(job)
