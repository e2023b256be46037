"""int8 quantization with ONNX Runtime, and how far it moves the predictions.

Recipes were chosen by top-1 agreement with the float model, measured here. efficientnet_lite0
(linear probe on a flowers5 slice of 300 images; 100 test images for the first figures, 300 from
0.917 on): dynamic quantization 0.15
(per-tensor) and 0.45 (per-channel), and slower than float; static QDQ with per-channel weights and
MinMax ranges 0.62 with the head and softmax quantized (probabilities on a 1/255 grid tie the top
classes), 0.917 with them in float; Percentile ranges, more calibration images or 16-bit
activations do not help much (0.943 at best). What does is the weights: int8 rounding shifts each
output channel's mean, most in depthwise convolutions (9 or 25 weights a channel), and the shifts
add up through the network. So images get static QDQ calibrated on training images, with bias
correction (Nagel et al. 2019: each convolution's bias absorbs its expected rounding shift, the
weights' rounding error times the mean input per channel measured on the calibration images: 0.953)
and the first convolution left in float (27 weights a channel, on the raw pixels: 0.980). Text gets
dynamic per-channel MatMul weights (minilm on amazon's test split: 0.968 per-tensor, 0.995
per-channel), with the products' inputs smoothed per channel first (``smoothing.py``). The head and softmax stay in float in both (they cost nothing to run). Dynamic
quantization scales each batch's activations by that batch's range, so a sentence's probabilities
move a little with the sentences batched beside it (minilm, amazon: up to 0.06, 1 top class in 64);
static QDQ or QOperator int8 for text, calibrated on 64 training sentences, would not, but agreed on
0.92-0.95 and ran at half the speed of dynamic int8.

On flowers5's whole test split (863 images) that recipe agrees on 0.959 (probe of 300 images) and
0.979 (probe of the whole training split); a quarter of the first probe's images lie within 0.05 of a
tie between their top two classes. Nothing else tried reaches 0.99 there (full probe): 256 calibration
images 0.975, Percentile ranges 0.968, symmetric activations 0.941, 16-bit activations 0.983, only
convolutions quantized 0.669. Leaving leading layers in float does, at a price in speed (probe of 300
images): 0.976 with the first 2 of 49 convolutions (int8 at 2.0x the float model's speed in ONNX
Runtime), 0.986 with 8 (1.7x), 0.992 with 18 (1.2x); the last 16 instead of the first: 0.965; the first
and the last in float 0.961 (the first alone 0.959); the 16 depthwise convolutions in float 0.760. So
when a model's agreement is below what the user asked for, more leading layers stay in float, twice as
many each try. A try must show the agreement asked for (:attr:`Agreement.lower_bound`): the two halves
of that test split disagree 14 and 21 times with the first convolution in float, 2 and 10 with 8, and 1
and 7 with 32, so a try judged on one half carries to the other only partly.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from ..runtime import OUTPUT_NAME, Bundle, open_session
from .samples import Samples
from .smoothing import SMOOTHING_ALPHA, smoothed_matmuls, tensor_values

__all__ = ["quantize_int8", "Quantized", "Agreement", "agreement", "float_predictions"]

_HEAD_OPS = ("Gemm", "MatMul")
_HEAD_DEPTH = 8  # nodes from the output back to a head's product: an ensemble's average of softmaxes takes 7
# Agreement is judged by its lower bound at one standard error: a try measured at just 0.99 on a few
# hundred samples is as likely to fall short of it on the inputs that follow as to reach it.
AGREEMENT_Z = 1.0
_CALIBRATION_BATCH = 16


class _Feeds(CalibrationDataReader):
    """Calibration batches, prepared by the bundle exactly as prediction prepares them."""

    def __init__(self, batches: Iterator[dict]) -> None:
        self.batches = batches

    def get_next(self) -> dict | None:
        return next(self.batches, None)


def _head_nodes(path: Path) -> list[str]:
    """Every node between a head's matrix product and the output, the products included: the softmax,
    and where a graph averages several views or members (test-time augmentation, an ensemble), every
    branch's head and softmax and the averaging. Quantized, probabilities on a 1/255 grid tie the top
    classes."""
    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {output: node for node in graph.node for output in node.output}
    kept, todo = [], [(producer.get(OUTPUT_NAME), 0)]
    while todo:
        node, depth = todo.pop()
        if node is None or node.name in kept or depth > _HEAD_DEPTH or node.op_type == "Conv":
            continue
        kept.append(node.name)
        if node.op_type not in _HEAD_OPS:
            todo.extend((producer.get(name), depth + 1) for name in node.input)
    return kept


@contextmanager
def _working_dir(folder: Path) -> Iterator[None]:
    """Run in ``folder``: ONNX Runtime's symbolic shape inference, when it gives up, saves its
    partial model (and a copy of every weight) into the current folder."""
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def _prepared(source: Path, scratch: Path, text: bool) -> Path:
    """ONNX Runtime's recommended pre-processing (shape inference, graph optimisation). Its symbolic
    shape inference gives up on the exporter's transformer graphs, so text skips it."""
    target = scratch / "preprocessed.onnx"
    try:
        with _working_dir(scratch):
            quant_pre_process(str(source), str(target), skip_symbolic_shape=text)
    except Exception:  # noqa: BLE001 - an optional step: quantize the exported graph as it is
        return source
    return target


def _input_means(model: onnx.ModelProto, tensors: list[str], batches: Iterator[dict]) -> dict[str, np.ndarray]:
    """Each tensor's mean per channel (axis 1) over the calibration batches, from the float model."""
    sums: dict[str, np.ndarray] = {}
    count = 0
    for values in tensor_values(model, tensors, batches):
        for name, value in values.items():
            per_sample = value.reshape(value.shape[0], value.shape[1], -1).mean(axis=2)
            sums[name] = sums.get(name, 0.0) + per_sample.sum(axis=0)
        count += len(next(iter(values.values())))
    return {name: total / max(count, 1) for name, total in sums.items()}


def _int8_rounding_error(weight: np.ndarray) -> np.ndarray:
    """What symmetric per-output-channel int8 rounding (scale: largest magnitude / 127, as ONNX
    Runtime quantizes weights) adds to ``weight``."""
    rows = weight.reshape(len(weight), -1).astype(np.float64)
    scale = np.abs(rows).max(axis=1, keepdims=True) / 127
    scale[scale == 0] = 1.0
    return (np.round(rows / scale) * scale - rows).reshape(weight.shape)


def _bias_corrected(model: onnx.ModelProto, means: dict[str, np.ndarray], keep_float: set[str],
                    target: Path) -> Path:
    """``model`` with each convolution's bias (those not in ``keep_float``) less the mean shift int8
    weight rounding will add to its output: the rounding error, summed over the kernel, times the mean
    of each input channel on the calibration batches (``means``; Nagel et al. 2019's bias correction)."""
    corrected = onnx.ModelProto()
    corrected.CopyFrom(model)
    weights = {tensor.name: tensor for tensor in corrected.graph.initializer}
    for node in _bias_convs(corrected.graph):
        if node.name in keep_float:
            continue
        weight = numpy_helper.to_array(weights[node.input[1]])
        bias = numpy_helper.to_array(weights[node.input[2]])
        groups = next((attribute.i for attribute in node.attribute if attribute.name == "group"), 1)
        per_group, width = len(weight) // groups, weight.shape[1]
        error = _int8_rounding_error(weight).reshape(len(weight), width, -1).sum(axis=2)
        mean_in = means[node.input[0]].reshape(groups, width)[np.arange(len(weight)) // per_group]
        shift = (error * mean_in).sum(axis=1)
        weights[node.input[2]].CopyFrom(numpy_helper.from_array((bias - shift).astype(bias.dtype), node.input[2]))
    onnx.save(corrected, str(target))
    return target


def _bias_convs(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The convolutions whose weights and bias are constants (those bias correction can adjust)."""
    weights = {tensor.name for tensor in graph.initializer}
    return [node for node in graph.node if node.op_type == "Conv" and len(node.input) > 2
            and node.input[1] in weights and node.input[2] in weights]


def _layers(graph: onnx.GraphProto, op_type: str, head: list[str]) -> list[tuple[int, str]]:
    """The layers quantization turns to int8, each with its depth (1 + how many of them lie between
    the input and it), the input's side first: convolutions, or matrix products by a weight (dynamic
    quantization leaves the others in float). Where a graph runs branches side by side (test-time
    augmentation's views, an ensemble's members), the branches' first layers come first, then their
    second ones, and so on (graph order among equals)."""
    weights = {tensor.name for tensor in graph.initializer}
    depth: dict[str, int] = {}
    layers = []
    for node in graph.node:  # ONNX orders nodes so that producers come before their consumers
        own = max((depth.get(name, 0) for name in node.input), default=0)
        if node.op_type == op_type and node.name not in head and (op_type != "MatMul" or node.input[1] in weights):
            own += 1
            layers.append((own, len(layers), node.name))
        depth.update((name, own) for name in node.output)
    return [(own, name) for own, _, name in sorted(layers)]


def _float_steps(first: int, layers: int) -> list[int]:
    """How many leading layers each try keeps in float: ``first``, then twice as many, always short of all."""
    steps = [first]
    while max(1, 2 * steps[-1]) < layers:
        steps.append(max(1, 2 * steps[-1]))
    return steps


@dataclass
class Quantized:
    """The int8 model written: its recipe in words, the leading layers it keeps in float (of how
    many), and each try's top-1 agreement (None where nothing measured it)."""

    method: str
    float_layers: int
    layers: int
    tried: list[dict]

    def to_dict(self) -> dict:
        return {"method": self.method, "float_layers": self.float_layers, "layers": self.layers, "tried": self.tried}


def quantize_int8(bundle: Bundle, source: Path, target: Path, calibration: list | None, *,
                  measure: Callable[[Path], Agreement] | None = None, min_agreement: float = 0.0) -> Quantized:
    """Write the int8 model of ``source`` to ``target``. With ``measure`` (a written model's top-1
    agreement with the float one), a model whose samples do not show ``min_agreement``
    (:meth:`Agreement.shows`) is made again with twice as many of its leading layers in float
    (rounding errors made early grow through every later layer), until one does or only float layers
    would be left; the last one tried stays in ``target``. ``calibration``: training samples; images
    calibrate their int8 ranges on them, texts the smoothing of their products' inputs (``smoothing.py``)."""
    text = bundle.modality == "text"
    with tempfile.TemporaryDirectory(prefix="headstart-quantize-") as scratch:
        prepared = _prepared(source.resolve(), Path(scratch), text)
        head = _head_nodes(prepared)
        model = onnx.load(str(prepared))
        if text and calibration:
            model = smoothed_matmuls(model, bundle.batches(calibration, _CALIBRATION_BATCH), set(head))
            prepared = Path(scratch) / "smoothed.onnx"
            onnx.save(model, str(prepared))
        depths = _layers(model.graph, "MatMul" if text else "Conv", head)
        layers = [name for _, name in depths]
        first = 0 if text else sum(own == 1 for own, _ in depths)  # images: each branch's first convolution
        conv_inputs = [] if text else list(dict.fromkeys(node.input[0] for node in _bias_convs(model.graph)))
        means = (_input_means(model, conv_inputs, bundle.batches(calibration or [], _CALIBRATION_BATCH))
                 if conv_inputs else {})
        tried: list[dict] = []
        for kept in _float_steps(first, len(layers)):
            in_float = layers[:kept]
            if text:
                quantize_dynamic(str(prepared), str(target), weight_type=QuantType.QInt8, per_channel=True,
                                 op_types_to_quantize=["MatMul"], nodes_to_exclude=head + in_float)
            else:
                corrected = _bias_corrected(model, means, set(in_float), Path(scratch) / "corrected.onnx")
                quantize_static(str(corrected), str(target),
                                _Feeds(bundle.batches(calibration or [], _CALIBRATION_BATCH)),
                                quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
                                activation_type=QuantType.QUInt8, calibrate_method=CalibrationMethod.MinMax,
                                nodes_to_exclude=head + in_float)
            measured = measure(target) if measure else None
            row = {"float_layers": kept, "top1_agreement": None}
            if measured is not None:
                row.update(top1_agreement=round(measured.agreement, 4), lower_bound=round(measured.lower_bound, 4))
            tried.append(row)
            if measured is None or measured.shows(min_agreement):
                break
    return Quantized(_method(text, first, kept, len(layers), bool(calibration)), kept, len(layers), tried)


def _method(text: bool, first: int, kept: int, layers: int, calibrated: bool) -> str:
    """The recipe, in words: ``first`` leading layers are the recipe's own in float, ``kept`` stayed."""
    if text:
        smoothing = f"inputs smoothed per channel (SmoothQuant, alpha {SMOOTHING_ALPHA}), " if calibrated else ""
        method = (f"dynamic int8 (per-channel MatMul weights, {smoothing}activations scaled by each batch's range; "
                  "head and softmax in float)")
    else:
        branches = f" of each of {first} branches" if first > 1 else ""
        method = ("static int8 QDQ (per-channel weights with bias correction, MinMax ranges; the first convolution"
                  f"{branches}, head and softmax in float)")
    if kept > first:
        method += f"; the first {kept} of {layers} {'matrix products' if text else 'convolutions'} in float"
    return method


@dataclass
class Agreement:
    """How an int8 model compares with the float one on the same inputs."""

    samples: int
    agreement: float
    float_accuracy: float | None
    int8_accuracy: float | None

    @property
    def lower_bound(self) -> float:
        """The agreement's Wilson score lower bound at one standard error: what these samples show of
        the agreement on inputs like them."""
        n, p, z2 = self.samples, self.agreement, AGREEMENT_Z ** 2
        if n == 0:
            return 0.0
        spread = AGREEMENT_Z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
        return (p + z2 / (2 * n) - spread) / (1 + z2 / n)

    def shows(self, target: float) -> bool:
        """Whether the samples show an agreement of at least ``target``: its lower bound reaches it, or
        (too few samples to show it, and nothing to improve) every sample agrees."""
        return self.lower_bound >= target or self.agreement >= 1.0

    def to_dict(self) -> dict:
        return {"samples": self.samples, "top1_agreement": round(self.agreement, 4),
                "lower_bound": round(self.lower_bound, 4),
                "float_accuracy": _rounded(self.float_accuracy), "int8_accuracy": _rounded(self.int8_accuracy)}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def float_predictions(bundle: Bundle, samples: Samples) -> np.ndarray:
    """The float model's top class of each sample (computed once, however many int8 models are measured)."""
    return np.concatenate([bundle.run(feeds).argmax(1) for feeds in bundle.batches(samples.items)])


def agreement(bundle: Bundle, int8_model: Path, samples: Samples, expected: np.ndarray | None = None) -> Agreement:
    """Top-1 agreement of the int8 model with the float one (whose top classes ``expected`` may give),
    and both accuracies when labels are known."""
    expected = float_predictions(bundle, samples) if expected is None else expected
    int8 = open_session(int8_model)
    got = np.concatenate([int8.run([OUTPUT_NAME], feeds)[0].argmax(1) for feeds in bundle.batches(samples.items)])
    if samples.labels is None:
        return Agreement(len(expected), float(np.mean(expected == got)), None, None)
    index = {name: i for i, name in enumerate(bundle.labels)}
    truth = np.array([index.get(label, -1) for label in samples.labels])
    return Agreement(len(expected), float(np.mean(expected == got)), float(np.mean(expected == truth)),
                     float(np.mean(got == truth)))
