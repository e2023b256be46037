"""The fitted network as one ONNX graph: inputs to class probabilities.

Exporter: ``torch.onnx.export(..., dynamo=True)``, the ``torch.export``-based exporter that
translates with onnxscript. Measured here (torch 2.14, onnxruntime 1.32, 2 CPU threads,
efficientnet_lite0, batch 32): its graph runs at 37 images/s in ONNX Runtime against 19 for the
TorchScript exporter's graph of the same network (the onnxscript optimizer folds the batch norms
and constants before ONNX Runtime sees them); the TorchScript exporter is deprecated since torch
2.9 and warns that its advanced-indexing translation is wrong for negative indices, which BERT's
attention masks use. The price is export time (about 50 s for efficientnet_lite0 and 27 s for
MiniLM on 2 cores, against 8 s and 3 s), paid once per bundle.

Text encoders are exported with transformers' "eager" attention (explicit matrix products and a
softmax) instead of ``scaled_dot_product_attention``, whose translation adds NaN guards and
reshapes around every head. Measured on amazon's test split (186 reviews in batches of 32, minilm,
2 threads, torch eager 292 sentences/s): 215 sentences/s with SDPA against 248 with eager
attention in float, and 356 against 515 once quantized to int8. Parity with torch holds to 1e-6. ONNX
Runtime's BERT optimizer (fused Attention, EmbedLayerNormalization) ran slower here than the
plain graph (202 against 225 sentences/s in float), so the graph is left as the exporter writes it.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import onnx
import torch
from torch import nn

from ..backbones import Backbone
from ..errors import ConfigError, first_line
from ..inference import TEST_VIEWS
from ..runtime import OUTPUT_NAME
from .graph_cache import graph_key, keep_graph, kept_graph

__all__ = ["IMAGE_INPUT", "MIN_OPSET", "check_opset", "input_names", "export_onnx"]

IMAGE_INPUT = "pixel_values"
MIN_OPSET = 18  # the dynamo exporter translates to 18 and later; asked for less, it quietly gives 18
_EXAMPLE_TEXTS = ["an example input", "a longer example input, with punctuation, to vary the length"]


class _Probabilities(nn.Module):
    """The network with a softmax on top, taking its inputs positionally (one tensor per name); with
    ``views`` (test-time augmentation), the mean of the softmax over the image and each view of it,
    as ``Transfer.predict_proba`` averages them."""

    def __init__(self, net: nn.Module, names: list[str], text: bool, views: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.net, self.names, self.text, self.views = net, names, text, views

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        inputs = dict(zip(self.names, tensors)) if self.text else tensors[0]
        probabilities = torch.softmax(self.net(inputs).float(), dim=1)
        for view in self.views:
            probabilities = probabilities + torch.softmax(self.net(TEST_VIEWS[view](inputs)).float(), dim=1)
        return probabilities / (1 + len(self.views))


def check_opset(opset: int | None) -> None:
    """An opset the exporter writes and the installed onnx knows (None: the exporter's default)."""
    newest = onnx.defs.onnx_opset_version()
    if opset is not None and not MIN_OPSET <= opset <= newest:
        raise ConfigError(f"--opset must be between {MIN_OPSET} and {newest} (the newest this onnx knows). "
                          f"Got {opset} instead.")


def input_names(backbone: Backbone) -> list[str]:
    """The graph's inputs: the image batch, or the tensors the backbone's tokenizer makes."""
    if backbone.contract.modality == "image":
        return [IMAGE_INPUT]
    return list(backbone.tokenizer.model_input_names)


def _example(backbone: Backbone, names: list[str]) -> tuple[tuple[torch.Tensor, ...], tuple[dict, ...]]:
    """Example inputs (batch 2; texts of two lengths, so padding is present) and each one's dynamic axes."""
    batch = torch.export.Dim("batch")
    if backbone.contract.modality == "image":
        size = int(backbone.contract.input_size)
        return (torch.rand(2, 3, size, size),), ({0: batch},)
    encoded = backbone.tokenizer(_EXAMPLE_TEXTS, padding=True, return_tensors="pt")
    sequence = torch.export.Dim("sequence")
    return tuple(encoded[name] for name in names), tuple({0: batch, 1: sequence} for _ in names)


@contextmanager
def _eager_attention(net: nn.Module) -> Iterator[None]:
    """Hugging Face encoders in ``net`` switched to eager attention while the exporter traces them."""
    encoders = [m for m in net.modules() if hasattr(m, "set_attn_implementation")
                and getattr(getattr(m, "config", None), "_attn_implementation", "eager") != "eager"]
    before = [m.config._attn_implementation for m in encoders]
    for encoder in encoders:
        encoder.set_attn_implementation("eager")
    try:
        yield
    finally:
        for encoder, implementation in reversed(list(zip(encoders, before))):
            encoder.set_attn_implementation(implementation)


def _code_digest() -> str:
    """The digest of the code that defines the exported graph (this module and the test-time views)."""
    from .. import inference

    return hashlib.sha256(Path(__file__).read_bytes() + Path(inference.__file__).read_bytes()).hexdigest()


def _run_exporter(model: _Probabilities, args: tuple[torch.Tensor, ...], axes: tuple[dict, ...], opset: int | None,
                  backbone: Backbone, path: Path) -> None:
    """``torch.onnx.export`` (dynamo) of ``model`` to ``path``; its failures as one ConfigError."""
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), _eager_attention(model.net):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, args, dynamo=True, input_names=model.names,
                                        output_names=[OUTPUT_NAME], dynamic_shapes=(axes,), opset_version=opset,
                                        verbose=False)
    except Exception as exc:  # torch.export and the translation raise many types; the first line says what
        raise ConfigError(f"torch.onnx.export cannot export this {backbone.name} network"
                          f"{f' at opset {opset}' if opset else ''}: {first_line(exc, 300)}") from exc
    program.save(str(path))


def export_onnx(net: nn.Module, backbone: Backbone, path: Path, opset: int | None = None, tta: bool = False) -> dict:
    """Write ``net`` with a softmax as an ONNX file (dynamic batch axis, and sequence axis for
    text), check it with ``onnx.checker`` and return what the manifest records of it. ``tta``: the
    graph averages the probabilities of each image and its test-time views (an image network only).
    The same network exported before is copied from the cache of graphs (``reused``: see graph_cache)."""
    names = input_names(backbone)
    args, axes = _example(backbone, names)
    views = tuple(TEST_VIEWS) if tta else ()
    model = _Probabilities(net.eval().cpu(), names, backbone.contract.modality == "text", views).eval()
    key = graph_key(model, args, {"inputs": names, "views": views, "opset": opset, "code": _code_digest()})
    reused = kept_graph(key, path)  # checked when it was kept, and its bytes match
    if not reused:
        _run_exporter(model, args, axes, opset, backbone, path)
        onnx.checker.check_model(str(path), full_check=True)
        keep_graph(key, path)
    graph = onnx.load(str(path), load_external_data=False)
    opsets = {entry.domain or "ai.onnx": entry.version for entry in graph.opset_import}
    return {"exporter": "torch.onnx.export(dynamo=True)", "torch": torch.__version__, "onnx": onnx.__version__,
            "opset": opsets.get("ai.onnx"), "inputs": names, "output": OUTPUT_NAME, "reused": reused,
            **({"tta": list(views)} if views else {})}
