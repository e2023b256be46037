"""Text backbones: Hugging Face encoders with sentence-transformers style pooling.

``hf:<id or folder>`` is any encoder in a local folder or the local Hugging Face cache;
``minilm`` (``minilm.py``) is all-MiniLM-L6-v2 from a pip package, built here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import nn

from ..contract import InputContract, LayerGroup
from ..errors import ConfigError, WeightsUnavailableError
from .base import Backbone, file_digest, layer_groups_from_names, weight_files_in

__all__ = ["TextEncoder", "build_hf_backbone"]


class TextEncoder(nn.Module):
    """A transformer encoder followed by mean pooling over real tokens (and L2 norm).

    This is what sentence-transformers computes for models with a mean Pooling module,
    written against plain ``transformers`` so fine-tuning sees one ordinary module.
    """

    def __init__(self, encoder: nn.Module, normalize: bool) -> None:
        super().__init__()
        self.encoder = encoder
        self.normalize = normalize

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled


def _text_layer_groups(encoder: nn.Module) -> tuple[LayerGroup, ...]:
    """Embeddings first, then one group per numbered transformer layer, then the rest."""
    embeddings: list[str] = []
    layers: dict[int, list[str]] = {}
    rest: list[str] = []
    for name, _ in encoder.named_parameters():
        full = f"encoder.{name}"  # names as seen from TextEncoder
        match = re.search(r"\b(?:layer|layers|block|h)\.(\d+)\.", name)
        if match:
            layers.setdefault(int(match.group(1)), []).append(full)
        elif "embed" in name:
            embeddings.append(full)
        else:
            rest.append(full)
    groups = {"embeddings": embeddings, **{f"layer{i}": layers[i] for i in sorted(layers)}, "top": rest}
    return layer_groups_from_names(groups)


def _folder_settings(folder: Path, tokenizer) -> tuple[int, bool]:
    """Max length and normalisation from a sentence-transformers folder, when it is one."""
    max_length = min(int(getattr(tokenizer, "model_max_length", 512) or 512), 512)
    st_config = folder / "sentence_bert_config.json"
    if st_config.is_file():
        max_length = int(json.loads(st_config.read_text()).get("max_seq_length", max_length))
    modules = folder / "modules.json"
    normalize = modules.is_file() and "Normalize" in modules.read_text()
    return max_length, normalize


def build_hf_backbone(spec: str, weights: str | Path | None = None, pretrained: bool = True,
                      name: str | None = None) -> Backbone:
    """Build a text encoder from a local folder or a model id already in the HF cache."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    if weights is not None:
        raise ConfigError("`--weights` applies to timm image models; for hf: give the model folder.")
    folder = Path(spec)
    local = folder.is_dir()
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec, local_files_only=True)
        if pretrained:
            encoder = AutoModel.from_pretrained(spec, local_files_only=True)
        else:
            encoder = AutoModel.from_config(AutoConfig.from_pretrained(spec, local_files_only=True))
    except OSError as exc:
        if local:
            raise ConfigError(f"{spec} is not a Hugging Face model folder: {exc}") from exc
        raise WeightsUnavailableError(
            f"No local copy of 'hf:{spec}': it is not in the Hugging Face cache and headstart "
            "never downloads at run time. Give a model folder (`hf:/path/to/model`), or fetch "
            f"it once on a connected machine (`hf download {spec}`)."
        ) from exc
    if not local:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(spec, local_files_only=True))
    max_length, normalize = _folder_settings(folder, tokenizer)
    weight_files = weight_files_in(folder)
    digest = file_digest(weight_files) if pretrained and weight_files else "random"
    contract = InputContract(
        modality="text",
        feature_dim=int(encoder.config.hidden_size),
        layer_groups=_text_layer_groups(encoder),
        tokenizer=name or f"hf:{spec}",
        max_length=max_length,
        extra={"pooling": "mean", "normalize": normalize},
    )
    module = TextEncoder(encoder, normalize).eval()
    return Backbone(name=name or f"hf:{spec}", module=module, contract=contract,
                    weights_digest=digest, tokenizer=tokenizer)
