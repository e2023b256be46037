"""A deployable bundle (``headstart export``) loaded for prediction with ONNX Runtime.

A bundle is a folder: ``model.onnx`` (inputs to class probabilities), ``contract.json`` (how
inputs are prepared), ``labels.json``, ``tokenizer.json`` for text, and ``manifest.json`` with
the SHA-256 of each file. Loading checks every digest, so a changed file is refused by name
instead of predicting quietly wrong.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image

from ..errors import ConfigError, DataError
from ..integrity import MANIFEST, changed_files, read_json, read_manifest_document
from .images import ImageContract, decode_file, in_memory_image, prepare_image
from .text import TextEncoder

__all__ = ["Bundle", "BundleInput", "is_bundle", "open_session", "BUNDLE_KIND", "MODEL_FILE", "CONTRACT_FILE", "LABELS_FILE",
           "TOKENIZER_FILE", "OUTPUT_NAME"]

BUNDLE_KIND = "headstart-bundle"  # manifest.json's "kind": what tells a bundle from a run or other folder
MODEL_FILE, CONTRACT_FILE, LABELS_FILE, TOKENIZER_FILE = "model.onnx", "contract.json", "labels.json", "tokenizer.json"
OUTPUT_NAME = "probabilities"
BundleInput = str | os.PathLike | Image.Image | np.ndarray


def is_bundle(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder ``headstart export`` wrote (its manifest says so); no digest is checked."""
    path = Path(path)
    try:
        document = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(document, dict) and document.get("kind") == BUNDLE_KIND and (path / MODEL_FILE).is_file()


def _verified(folder: Path) -> dict:
    """The manifest, once every file it lists (and every file a bundle needs) matches its digest."""
    if not folder.is_dir():
        raise DataError(f"{folder} is not a bundle folder (it does not exist). Make one with `headstart export`.")
    if not is_bundle(folder):
        raise DataError(f"{folder} is not a headstart bundle: it has no {MANIFEST} of kind '{BUNDLE_KIND}' "
                        f"beside a {MODEL_FILE}. Make one with `headstart export RUN --out DIR`.")
    document = read_manifest_document(folder)
    digests = document["sha256"]
    names = sorted({*digests, MODEL_FILE, CONTRACT_FILE, LABELS_FILE})
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise DataError(f"{folder} is incomplete: {', '.join(missing)} is missing. Export the bundle again.")
    changed = changed_files(folder, names, digests)
    if changed:
        raise DataError(f"{folder}: {', '.join(changed)} changed after the bundle was written (its SHA-256 in "
                        f"{MANIFEST} no longer matches); restore the original, or export the bundle again.")
    return document


# ONNX Runtime fuses each residual Add and LayerNormalization into SkipLayerNormalization, whose CPU kernel
# was the slower side here (onnxruntime 1.32, 2 threads, minilm on amazon's test split in batches of 32):
# without that fusion the float graph ran 209 -> 267 sentences/s and the int8 one 481 -> 566, outputs
# unchanged to 1e-6. Image networks have no layer norms, so nothing changes for them.
_SLOWER_FUSIONS = ["SkipLayerNormFusion"]


def open_session(path: Path, threads: int | None = None,
                 providers: Sequence[str] | None = None) -> ort.InferenceSession:
    """An ONNX Runtime session on ``path`` as the runtime runs bundles (``threads``: intra-op threads)."""
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=list(providers or ["CPUExecutionProvider"]),
                                    disabled_optimizers=_SLOWER_FUSIONS)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own (pybind) types for an invalid model
        raise DataError(f"{path} is not a model ONNX Runtime can run: {str(exc).splitlines()[0][:200]}") from None


def image_contract(contract: dict) -> ImageContract:
    """The image part of a bundle's ``contract.json``."""
    image = contract["image"]
    return ImageContract(int(image["size"]), image.get("crop_pct"), image["interpolation"], tuple(image["mean"]),
                         tuple(image["std"]), image.get("max_pixels"))


@dataclass
class Bundle:
    """An exported model ready to predict: the ONNX Runtime session, its labels and input contract."""

    folder: Path
    labels: list[str]
    contract: dict
    session: ort.InferenceSession
    manifest: dict
    encode: Callable[[list], dict[str, np.ndarray]]

    @classmethod
    def load(cls, path: str | os.PathLike, *, verify: bool = True, threads: int | None = None,
             providers: Sequence[str] | None = None) -> Bundle:
        """Open a bundle, checking every file against ``manifest.json`` (``verify=False`` only while
        exporting, before the manifest exists). ``threads``: ONNX Runtime's intra-op threads."""
        folder = Path(path)
        manifest = _verified(folder) if verify else {}
        contract = read_json(folder / CONTRACT_FILE, dict)
        labels = read_json(folder / LABELS_FILE, list)
        session = open_session(folder / MODEL_FILE, threads, providers)
        names = [node.name for node in session.get_inputs()]
        if contract.get("modality") == "text":
            text = contract["text"]
            encode = TextEncoder(folder / text["tokenizer"], int(text["max_length"]), names)
        elif contract.get("modality") == "image":
            encode = _ImageEncoder(image_contract(contract), names)
        else:
            raise DataError(f"{folder / CONTRACT_FILE} is damaged: its modality must be 'image' or 'text'.")
        return cls(folder, [str(label) for label in labels], contract, session, manifest, encode)

    @property
    def modality(self) -> str:
        """'image' or 'text'."""
        return self.contract["modality"]

    def check_tta(self, requested: bool) -> None:
        """Refuse test-time augmentation asked of a bundle exported without it: its graph decides."""
        if requested and not self.manifest.get("model", {}).get("tta"):
            raise ConfigError(f"{self.folder} is a bundle exported without test-time augmentation; it predicts as "
                              "exported. Leave `--tta` off, use the run, or export a run fitted with `--tta`.")

    def items(self, inputs: BundleInput | Sequence[BundleInput]) -> list:
        """The inputs as a list: one path, text, PIL image or array counts as one input; a 4-D
        array as a batch of ``(H, W, 3)`` images."""
        if isinstance(inputs, (str, os.PathLike, Image.Image)):
            return [inputs]
        if isinstance(inputs, np.ndarray):
            return list(inputs) if inputs.ndim == 4 else [inputs]
        return list(inputs)

    def batches(self, inputs: BundleInput | Sequence[BundleInput], batch_size: int = 32) -> Iterator[dict]:
        """The model's input arrays, batch by batch, prepared as in training."""
        items = self.items(inputs)
        for start in range(0, len(items), batch_size):
            yield self.encode(items[start:start + batch_size])

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Class probabilities of one prepared batch."""
        return self.session.run([OUTPUT_NAME], feeds)[0]

    def predict_proba(self, inputs: BundleInput | Sequence[BundleInput], batch_size: int = 32) -> np.ndarray:
        """Class probabilities ``(n, classes)``, columns in the order of ``labels``."""
        rows = [self.run(feeds) for feeds in self.batches(inputs, batch_size)]
        return np.concatenate(rows) if rows else np.zeros((0, len(self.labels)), dtype=np.float32)

    def predict(self, inputs: BundleInput | Sequence[BundleInput], batch_size: int = 32) -> list[str]:
        """The predicted class name of each input."""
        return [self.labels[i] for i in self.predict_proba(inputs, batch_size).argmax(1)]

    def predict_table(self, inputs: BundleInput | Sequence[BundleInput], batch_size: int = 32) -> list[dict]:
        """One row per input, as ``headstart predict --json`` prints them: ``input`` (the path, the
        text, or ``[i]`` for an in-memory image), ``label`` and ``probabilities`` by class."""
        items = self.items(inputs)
        probabilities = self.predict_proba(items, batch_size)
        return [{"input": _describe(item, i), "label": self.labels[int(p.argmax())],
                 "probabilities": {c: float(v) for c, v in zip(self.labels, p)}}
                for i, (item, p) in enumerate(zip(items, probabilities))]


def _describe(item: Any, index: int) -> str:
    return os.fspath(item) if isinstance(item, (str, os.PathLike)) else f"[{index}]"


class _ImageEncoder:
    """Paths, PIL images and arrays into the ``(n, 3, size, size)`` float32 batch of an image graph."""

    def __init__(self, contract: ImageContract, input_names: list[str]) -> None:
        if len(input_names) != 1:
            raise DataError(f"an image bundle's model must take one input; this one takes {len(input_names)}.")
        self.contract, self.name = contract, input_names[0]

    def image(self, item: Any) -> Image.Image:
        if isinstance(item, (str, os.PathLike)):
            return decode_file(item, self.contract)
        if isinstance(item, (Image.Image, np.ndarray)):
            return in_memory_image(item, self.contract)
        raise DataError(f"an image bundle predicts image paths, PIL images or uint8 arrays. Got a {type(item).__name__}.")

    def __call__(self, items: list) -> dict[str, np.ndarray]:
        return {self.name: np.stack([prepare_image(self.image(item), self.contract) for item in items])}
