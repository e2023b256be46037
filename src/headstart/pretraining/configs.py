"""The options of each pre-training method, without torch.

Every method's config is a :class:`~headstart.config.Config` (help text and valid range on each
field), so ``headstart pretrain`` builds its flags from them without loading torch, and a run's
``config.yaml`` records them. :data:`METHOD_CONFIGS` lists the methods in the order the CLI shows them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..config import Config, at_least, between, option

__all__ = ["PretrainConfig", "SelfSupervisedConfig", "TsdaeConfig", "SimcseConfig", "MlmConfig", "SimclrConfig",
           "SupervisedConfig", "METHOD_CONFIGS"]


@dataclass
class PretrainConfig(Config):
    """The budget and schedule every pre-training method shares."""

    owner: ClassVar[str] = "pretrain"
    epochs: int = option(1, "passes over the pre-training data", at_least(1, int))
    lr: float = option(3e-5, "peak learning rate of the backbone (AdamW)", at_least(0, strict=True))
    weight_decay: float = option(0.01, "AdamW weight decay (none on biases and norms)", at_least(0))
    batch_size: int = option(32, "training batch size (contrastive methods: the negatives of each sample are the "
                             "rest of its batch)", at_least(2, int), flag="train-batch")
    warmup_epochs: float = option(0.1, "epochs of linear warm-up before the cosine decay", at_least(0))
    patience: int = option(0, "early stopping after N epochs without a better validation loss (0: off); the best "
                           "epoch's weights are kept", at_least(0, int))
    clip_norm: float = option(1.0, "gradient-norm clipping (0: off)", at_least(0))


@dataclass
class SelfSupervisedConfig(PretrainConfig):
    """Options of the self-supervised methods: they train on unlabelled data."""

    steps: int | None = option(None, "optimizer steps in all, instead of whole epochs: the data is passed over in "
                               "as many equal epochs as that takes (checkpoints and validation at each epoch's end)",
                               at_least(1, int))
    head_lr_scale: float = option(1.0, "the lr of the objective's own new weights (projection head, decoder "
                                  "cross-attention) relative to lr", at_least(0, strict=True))
    val_fraction: float = option(0.1, "share of the data held out for the objective's validation loss "
                                 "(early stopping, the report's curve); 0: none", between(0, 0.5, high_open=True))


@dataclass
class TsdaeConfig(SelfSupervisedConfig):
    """``tsdae``: a decoder tied to the encoder rebuilds each text from the embedding of a damaged copy
    (Wang et al., EMNLP Findings 2021), with sentence-transformers' ``DenoisingAutoEncoderLoss``."""

    owner: ClassVar[str] = "tsdae"
    deletion: float = option(0.6, "share of the words deleted from each text's damaged copy",
                             between(0, 1, high_open=True))


@dataclass
class SimcseConfig(SelfSupervisedConfig):
    """``simcse``: each text against itself under another dropout mask, the batch's other texts as negatives
    (Gao et al., EMNLP 2021), with sentence-transformers' ``MultipleNegativesRankingLoss``."""

    owner: ClassVar[str] = "simcse"
    scale: float = option(20.0, "inverse temperature of the contrastive loss's cosine similarities",
                          at_least(0, strict=True))


@dataclass
class MlmConfig(SelfSupervisedConfig):
    """``mlm``: masked-language modelling, the encoder's own pre-training objective (Devlin et al., 2019),
    continued on your texts as "Don't Stop Pretraining" does (Gururangan et al., ACL 2020), with
    transformers' ``AutoModelForMaskedLM`` and ``DataCollatorForLanguageModeling``. Only for an encoder
    whose folder keeps its masked-LM head (sentence-transformers models such as minilm do not)."""

    owner: ClassVar[str] = "mlm"
    lr: float = option(5e-5, "peak learning rate of the backbone (AdamW)", at_least(0, strict=True))
    mask: float = option(0.15, "share of tokens to predict: 80 % of them masked, 10 % replaced by a random token, "
                         "10 % kept (BERT's recipe)", between(0, 1, low_open=True, high_open=True))


@dataclass
class SimclrConfig(SelfSupervisedConfig):
    """``simclr``: two augmented views of each image agree through a projection head, the batch's other
    images as negatives (Chen et al., ICML 2020), with lightly's ``NTXentLoss`` and ``SimCLRTransform``."""

    owner: ClassVar[str] = "simclr"
    lr: float = option(1e-4, "peak learning rate of the backbone (AdamW)", at_least(0, strict=True))
    head_lr_scale: float = option(10.0, "the lr of the projection head (new weights) relative to lr",
                                  at_least(0, strict=True))
    temperature: float = option(0.2, "temperature of the NT-Xent loss", at_least(0, strict=True))
    min_crop: float = option(0.2, "smallest share of an image a random crop of a view keeps",
                             between(0, 1, low_open=True))
    jitter: float = option(0.5, "strength of the colour jitter of the views (1: SimCLR's)", between(0, 1))
    projection_dim: int = option(128, "output size of the projection head", at_least(1, int))


@dataclass
class SupervisedConfig(PretrainConfig):
    """``supervised``: fine-tune on a labelled source set (the ``finetune`` strategy), saved as a backbone
    for the next task (a transfer chain)."""

    owner: ClassVar[str] = "supervised"
    epochs: int = option(5, "passes over the labelled source data", at_least(1, int))
    lr: float = option(3e-4, "peak learning rate of the backbone's top layer group (AdamW)", at_least(0, strict=True))
    warmup_epochs: float = option(0.5, "epochs of linear warm-up before the cosine decay", at_least(0))
    patience: int = option(3, "early stopping after N epochs without a better validation macro F1 (0: off)",
                           at_least(0, int))
    test: float = option(0.2, "share of the labelled source held out to measure the source model",
                         between(0, 1, low_open=True, high_open=True))


METHOD_CONFIGS: dict[str, type[PretrainConfig]] = {
    "tsdae": TsdaeConfig, "simcse": SimcseConfig, "mlm": MlmConfig, "simclr": SimclrConfig,
    "supervised": SupervisedConfig}
