"""Text objectives through sentence-transformers' own losses, ``tsdae`` and ``simcse``, and transformers'
masked-language modelling, ``mlm``.

The losses take a ``SentenceTransformer``; :class:`BackboneEmbedding` makes one whose only module is
the backbone itself (the same encoder and pooling the features come from), so training the loss
trains the backbone. TSDAE's decoder is built by the loss from the encoder's own local folder and
tied to it (``tie_encoder_decoder=True``): nothing is fetched from a hub. Tying replaces the
encoder's weights with the decoder's, read from that folder; the backbone's own weights (a ``run:``
backbone's, say) are put back right after.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import InputModule
from sentence_transformers.sentence_transformer.losses import (DenoisingAutoEncoderLoss,
                                                               MultipleNegativesRankingLoss)
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from .. import distributed
from ..errors import ConfigError, WeightsUnavailableError
from .job import PretrainJob

__all__ = ["BackboneEmbedding", "TextViews", "MaskedTexts", "text_loaders", "tsdae_objective", "simcse_objective",
           "mlm_objective"]


class BackboneEmbedding(InputModule):
    """A text backbone as a sentence-transformers module: tokenizer features in, ``sentence_embedding`` out."""

    def __init__(self, backbone: nn.Module, tokenizer, max_length: int) -> None:
        super().__init__()
        self.backbone, self.tokenizer, self.max_seq_length = backbone, tokenizer, max_length

    def forward(self, features: dict[str, torch.Tensor], **kwargs) -> dict[str, torch.Tensor]:
        inputs = {k: v for k, v in features.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        return {**features, "sentence_embedding": self.backbone(**inputs)}

    def tokenize(self, texts: list[str], **kwargs) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_seq_length,
                                   return_tensors="pt"))

    def save(self, output_path: str, *args, **kwargs) -> None:
        raise NotImplementedError("a pre-trained backbone is saved as a headstart run, not a sentence-transformers folder")


class _Objective(nn.Module):
    """A sentence-transformers loss on a batch of views (lists of tokenizer features); no labels."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, views: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        return self.loss(views, None)


def _sentence_transformer(job: PretrainJob) -> SentenceTransformer:
    backbone = job.backbone
    module = BackboneEmbedding(backbone.module, backbone.tokenizer, backbone.contract.max_length or 512)
    return SentenceTransformer(modules=[module], device="cpu")


def _encoder(job: PretrainJob) -> nn.Module:
    encoder = getattr(job.backbone.module, "encoder", None)
    if encoder is None or not hasattr(encoder, "config"):
        raise ConfigError(f"The backbone '{job.model}' is no Hugging Face text encoder; tsdae and simcse pre-train "
                          "`minilm`, `hf:<folder>` or a `run:` of one.")
    return encoder


def _local_folder(encoder: nn.Module, model: str, method: str = "tsdae", what: str = "its decoder") -> str:
    """The folder the encoder was read from: TSDAE's decoder and the masked-LM head are built from it."""
    where = str(getattr(encoder.config, "_name_or_path", "") or "")
    if where and Path(where).is_dir():
        return where
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(where, local_files_only=True)
    except Exception:  # noqa: BLE001 - huggingface_hub raises many kinds for "not here"
        raise WeightsUnavailableError(
            f"{method} builds {what} from the encoder's own files, and no local copy of '{where or model}' was "
            "found; give the backbone as a model folder (`hf:/path/to/model`).") from None


def tsdae_objective(job: PretrainJob) -> nn.Module:
    """TSDAE: sentence-transformers' ``DenoisingAutoEncoderLoss`` with a decoder tied to the backbone,
    its cross-attention (new weights) initialised from the run's seed."""
    encoder = _encoder(job)
    encoder.config._name_or_path = _local_folder(encoder, job.model)
    own = {name: value.detach().clone() for name, value in encoder.state_dict().items()}
    model = _sentence_transformer(job)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(job.seed)
        try:
            loss = DenoisingAutoEncoderLoss(model, tie_encoder_decoder=True)
        except ValueError as exc:
            raise ConfigError(f"tsdae needs an encoder whose architecture also has a decoder with cross-attention "
                              f"(BERT, RoBERTa, ...); '{job.model}' has none ({exc}). Use `--method simcse`.") from None
    encoder.load_state_dict(own)  # tying loaded the folder's weights: the backbone's own come back
    return _Objective(loss)


def simcse_objective(job: PretrainJob) -> nn.Module:
    """Unsupervised SimCSE: ``MultipleNegativesRankingLoss`` on (text, same text), the two passes
    differing by their dropout masks."""
    _encoder(job)
    return _Objective(MultipleNegativesRankingLoss(_sentence_transformer(job), scale=job.config.scale))


class _MaskedLM(nn.Module):
    """A masked-LM model (the backbone's encoder under the folder's head) on a batch of masked texts."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, views: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        return self.model(**views[0]).loss


def mlm_objective(job: PretrainJob) -> nn.Module:
    """Masked-language modelling: the encoder's own masked-LM head, read from its folder, on top of the
    backbone's encoder (its own weights: a ``run:`` backbone's too), the output layer tied to its embeddings."""
    from transformers import AutoModelForMaskedLM

    encoder = _encoder(job)
    folder = _local_folder(encoder, job.model, "mlm", "the masked-LM head")
    try:
        model, loading = AutoModelForMaskedLM.from_pretrained(folder, output_loading_info=True)
    except ValueError as exc:  # an architecture without a masked-LM class
        raise ConfigError(f"'{job.model}' has no masked-LM architecture ({str(exc).splitlines()[0][:150]}). "
                          "Use `--method tsdae` or `--method simcse`.") from None
    head = [key for key in loading["missing_keys"] if not key.startswith(model.base_model_prefix)]
    if head:
        raise ConfigError(f"'{job.model}' keeps no masked-LM head in {folder} ({head[0]} and {len(head) - 1} more "
                          "weights are missing); mlm continues an encoder's own masked-LM training. Use `--method "
                          "tsdae` or `--method simcse`.")
    setattr(model, model.base_model_prefix, encoder)  # the backbone trains; the head sits on it
    model.tie_weights()
    return _MaskedLM(model)


class MaskedTexts:
    """A ``collate_fn``: a batch of texts to ``([masked tokens with their labels], labels)``, masked by
    transformers' ``DataCollatorForLanguageModeling`` (from torch's generator, which the loop seeds)."""

    def __init__(self, tokenizer, max_length: int, mask: float) -> None:
        from transformers import DataCollatorForLanguageModeling

        self.tokenizer, self.max_length = tokenizer, max_length
        self.masking = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mask, return_tensors="pt")

    @classmethod
    def of(cls, job: PretrainJob, mask: float) -> MaskedTexts:
        """The masking for the job's backbone: its tokenizer, its maximum length."""
        return cls(job.backbone.tokenizer, job.backbone.contract.max_length or 512, mask)

    def __call__(self, texts: list[str]) -> tuple[list[dict[str, torch.Tensor]], torch.Tensor]:
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
        batch = self.masking([{key: values[i] for key, values in encoded.items()} for i in range(len(texts))])
        return [dict(batch)], torch.zeros(len(texts), dtype=torch.int64)


class TextViews:
    """A ``collate_fn``: a batch of texts to ``([first view, second view], labels)``, each view the
    tokenizer's tensors. The first view is a damaged copy (``deletion``: the share of words dropped,
    at least one kept; drawn from Python's generator, which the loop seeds per epoch) or the text itself."""

    def __init__(self, tokenizer, max_length: int, deletion: float | None) -> None:
        self.tokenizer, self.max_length, self.deletion = tokenizer, max_length, deletion

    @classmethod
    def of(cls, job: PretrainJob, deletion: float | None) -> TextViews:
        """The views for the job's backbone: its tokenizer, its maximum length."""
        return cls(job.backbone.tokenizer, job.backbone.contract.max_length or 512, deletion)

    def damage(self, text: str) -> str:
        words = text.split()
        kept = [word for word in words if random.random() >= self.deletion]
        return " ".join(kept or [random.choice(words)]) if words else text

    def _tokens(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                   return_tensors="pt"))

    def __call__(self, texts: list[str]) -> tuple[list[dict[str, torch.Tensor]], torch.Tensor]:
        first = [self.damage(text) for text in texts] if self.deletion else list(texts)
        return [self._tokens(first), self._tokens(list(texts))], torch.zeros(len(texts), dtype=torch.int64)


def text_loaders(job: PretrainJob, collate) -> tuple[DataLoader, DataLoader | None]:
    """Shuffled training batches (each rank its share of one permutation per epoch) and, with a
    validation share, its batches in order; ``collate`` makes a batch's views of its texts."""
    world, batch = distributed.current(), job.config.batch_size
    sampler = DistributedSampler(job.train.items, num_replicas=world.size, rank=world.rank, shuffle=True, seed=job.seed,
                                 drop_last=world.size > 1)
    train = DataLoader(job.train.items, batch_size=batch, sampler=sampler, collate_fn=collate,
                       drop_last=len(sampler) > batch, generator=torch.Generator())
    val = DataLoader(job.val.items, batch_size=batch, collate_fn=collate) if job.val is not None else None
    return train, val
