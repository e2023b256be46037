"""``headstart export``: every strategy as one ONNX graph, written only when it predicts what the run does.

Tiny random backbones keep these fast; the integration tests at the end export the packaged
efficientnet_lite0 and minilm on slices of the real data, with int8 quantization.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import (
    TINY_TIMM,
    colour_folder,
    review_table,
    tiny_bert_folder,
    tiny_timm_weights,
)
from test_cli import run_cli

import headstart as hs
from headstart.data import LabelledData, TextTable
from headstart.devices import cpu_description
from headstart.errors import ConfigError, DataError
from headstart.export import export_bundle
from headstart.export.quantize import Agreement
from headstart.export import samples as export_samples
from headstart.integrity import sha256_of
from headstart.runtime import Bundle, is_bundle
from headstart.workflows import fit_run

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ONE_EPOCH = {"epochs": 1, "patience": 0}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("export-images")
    return colour_folder(root / "images", per_class=8, size=37), tiny_timm_weights(root)


def _image_run(root: Path, images, strategy: str) -> Path:
    folder, weights = images
    options = {} if strategy == "linear-probe" else ONE_EPOCH
    fit_run(folder, root / strategy, model=f"timm:{TINY_TIMM}", weights=weights, strategy=strategy,
            options=options, workers=0)
    return root / strategy


@pytest.fixture(scope="module")
def image_runs(tmp_path_factory, images):
    root = tmp_path_factory.mktemp("export-image-runs")
    return {name: _image_run(root, images, name) for name in ("linear-probe", "finetune", "lora")}


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export-text")
    table = review_table(root / "reviews.csv", per_class=20)
    fit_run(table, root / "run", model=f"hf:{tiny_bert_folder(root / 'bert')}", strategy="lora",
            options=ONE_EPOCH, workers=0)
    return root / "run", table


def _image_paths(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*.png"))


@pytest.mark.parametrize("strategy", ["linear-probe", "finetune", "lora"])
def test_every_strategy_exports_one_graph_that_predicts_what_the_run_predicts(image_runs, images, tmp_path,
                                                                            monkeypatch, capsys, strategy):
    run, out = image_runs[strategy], tmp_path / "bundle"
    code, stdout, err = run_cli(monkeypatch, capsys, "export", run, "--out", out, "--json")
    assert code == 0, err
    figures = json.loads(stdout)
    assert sorted(p.name for p in out.iterdir()) == ["contract.json", "labels.json", "manifest.json", "model.onnx",
                                                     "trained_on.json"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "headstart-bundle" and manifest["run"]["strategy"] == strategy
    assert manifest["run"]["manifest_sha256"] == sha256_of(run / "manifest.json")
    assert manifest["sha256"] == {name: sha256_of(out / name) for name in ("contract.json", "labels.json", "model.onnx",
                                                                         "trained_on.json")}
    assert (out / "trained_on.json").read_bytes() == (run / "trained_on.json").read_bytes()
    assert manifest["parity"] == figures["parity"] and figures["parity"]["max_abs_diff"] <= 1e-4
    assert "test split" in figures["parity"]["inputs"] and figures["parity"]["top1_disagreements"] == 0
    contract = json.loads((out / "contract.json").read_text())
    assert contract["image"]["size"] == 160 and contract["image"]["interpolation"] == "bicubic"
    paths = _image_paths(images[0])
    expected = hs.load(run, device="cpu").predict_proba(LabelledData("image", paths))
    assert np.abs(Bundle.load(out).predict_proba(paths) - expected).max() < 1e-4


def test_a_text_run_exports_with_its_tokenizer_and_int8_agreement_is_reported(text_run, tmp_path):
    run, table = text_run
    result = export_bundle(run, tmp_path / "bundle", quantize="int8", min_agreement=0.0)
    assert sorted(p.name for p in result.out_dir.iterdir()) == ["contract.json", "labels.json", "manifest.json",
                                                                 "model.onnx", "tokenizer.json", "trained_on.json"]
    contract = json.loads((result.out_dir / "contract.json").read_text())
    assert contract["text"]["max_length"] > 0 and contract["inputs"][0] == "input_ids"
    quantization = json.loads((result.out_dir / "manifest.json").read_text())["quantization"]
    assert quantization == result.quantization and quantization["method"].startswith("dynamic int8")
    assert "smoothed per channel" in quantization["method"] and " training texts of " in quantization["calibration"]
    assert 0.0 <= quantization["top1_agreement"] <= 1.0 and quantization["float_accuracy"] is not None
    data = TextTable(table)
    float_bundle = export_bundle(run, tmp_path / "float")
    graph = onnx.load(str(float_bundle.out_dir / "model.onnx"))  # eager attention: no SDPA NaN guards
    assert {"Softmax", "MatMul"} <= {n.op_type for n in graph.graph.node} and "IsNaN" not in {n.op_type for n in graph.graph.node}
    expected = hs.load(run, device="cpu").predict_proba(data)
    assert np.abs(Bundle.load(float_bundle.out_dir).predict_proba(data.items) - expected).max() < 1e-4


def test_image_int8_is_calibrated_on_training_images_and_measured_on_the_test_split(image_runs, images, tmp_path):
    result = export_bundle(image_runs["linear-probe"], tmp_path / "bundle", quantize="int8", min_agreement=0.0)
    q = result.quantization
    assert q["method"].startswith("static int8") and "training images of" in q["calibration"]
    assert "test split" in q["evaluated_on"] and q["samples"] == 5 and q["int8_accuracy"] is not None
    assert q["measured_on"] == cpu_description()  # int8 kernels, and so agreement, differ between CPUs
    probabilities = Bundle.load(result.out_dir).predict_proba(_image_paths(images[0]))
    assert probabilities.shape == (24, 3) and np.allclose(probabilities.sum(1), 1, atol=1e-4)


def test_a_run_fitted_on_a_relative_path_calibrates_on_its_own_images_from_another_folder(images, tmp_path,
                                                                                        monkeypatch):
    folder, weights = images
    monkeypatch.chdir(folder.parent)
    fit_run(folder.name, tmp_path / "run", model=f"timm:{TINY_TIMM}", weights=weights, strategy="linear-probe",
            workers=0)
    decoy = tmp_path / "elsewhere" / folder.name  # a same-named folder where export is run
    colour_folder(decoy, per_class=2, size=37)
    monkeypatch.chdir(decoy.parent)
    result = export_bundle(tmp_path / "run", tmp_path / "bundle", quantize="int8", min_agreement=0.0)
    assert result.quantization["calibration"].endswith(f"training images of {folder.resolve()}")


def test_a_bundle_that_disagrees_with_the_run_is_not_written(image_runs, tmp_path, monkeypatch, capsys):
    original = Bundle.predict_proba
    monkeypatch.setattr(Bundle, "predict_proba", lambda self, *a, **k: original(self, *a, **k) + 1e-3)
    code, _, err = run_cli(monkeypatch, capsys, "export", image_runs["linear-probe"], "--out", tmp_path / "bundle")
    assert code == 2 and "does not predict what the run predicts" in " ".join(err.split())
    assert "Traceback" not in err and list(tmp_path.iterdir()) == []


def test_the_int8_summary_names_the_cpu_that_measured_the_agreement(image_runs, tmp_path, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "export", image_runs["linear-probe"], "--out", tmp_path / "bundle",
                             "--quantize", "int8", "--min-agreement", "0")
    assert code == 0, err
    assert f"measured on {cpu_description()} (int8 kernels differ between CPUs)" in " ".join(out.split())


def test_int8_below_the_least_agreement_is_refused(image_runs, tmp_path, monkeypatch):
    monkeypatch.setattr("headstart.export.bundle.agreement", lambda *a: Agreement(5, 0.6, 1.0, 0.6))
    with pytest.raises(DataError, match=r"agrees with the float model on 60.0% .* below --min-agreement 0.99, "
                                        r"even with its first \d+ of \d+ layers left in float"):
        export_bundle(image_runs["linear-probe"], tmp_path / "bundle", quantize="int8")
    assert list(tmp_path.iterdir()) == []


def test_an_agreement_counts_as_shown_by_its_lower_bound_or_when_every_sample_agrees():
    assert Agreement(432, 430 / 432, None, None).shows(0.99)  # 2 disagreements: lower bound 0.991
    assert not Agreement(432, 428 / 432, None, None).shows(0.99)  # 0.9907 measured, lower bound 0.985
    assert Agreement(30, 1.0, None, None).shows(0.99)  # too few samples to show 0.99, and none disagrees
    assert not Agreement(30, 29 / 30, None, None).shows(0.95)  # 0.967 measured, lower bound 0.916
    assert Agreement(432, 428 / 432, None, None).lower_bound < 428 / 432 < 430 / 432


def test_int8_whose_agreement_passes_only_by_chance_keeps_more_layers_in_float(image_runs, tmp_path, monkeypatch):
    scores = iter([428 / 432, 431 / 432])  # the first measures 0.9907, too few samples to show 0.99
    monkeypatch.setattr("headstart.export.bundle.agreement", lambda *a: Agreement(432, next(scores), 1.0, 1.0))
    q = export_bundle(image_runs["linear-probe"], tmp_path / "bundle", quantize="int8").quantization
    assert [t["float_layers"] for t in q["tried"]] == [1, 2] and q["top1_agreement"] == round(431 / 432, 4)
    assert q["tried"][0]["lower_bound"] < 0.99 <= q["lower_bound"]


def test_int8_below_the_least_agreement_leaves_more_leading_layers_in_float_until_it_agrees(image_runs, tmp_path,
                                                                                            monkeypatch):
    import onnx

    scores = iter([0.5, 0.8, 1.0])  # the first two tries disagree too often, the third agrees
    monkeypatch.setattr("headstart.export.bundle.agreement", lambda *a: Agreement(5, next(scores), 1.0, 1.0))
    result = export_bundle(image_runs["linear-probe"], tmp_path / "bundle", quantize="int8", min_agreement=0.9)
    q = result.quantization
    assert [t["float_layers"] for t in q["tried"]] == [1, 2, 4] and q["float_layers"] == 4 < q["layers"]
    assert [t["top1_agreement"] for t in q["tried"]] == [0.5, 0.8, 1.0] and q["top1_agreement"] == 1.0
    assert "the first 4 of" in q["method"]
    graph = onnx.load(str(result.out_dir / "model.onnx")).graph
    convs = [node for node in graph.node if node.op_type == "Conv"]  # left in float: not fused into QLinearConv
    quantized = {node.output[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    assert all(node.input[1] not in quantized for node in convs[:4]) and any(node.input[1] in quantized
                                                                            for node in convs[4:])


def test_without_its_test_images_a_run_is_checked_on_generated_images(images, tmp_path):
    data = shutil.copytree(images[0], tmp_path / "data")
    fit_run(data, tmp_path / "run", model=f"timm:{TINY_TIMM}", weights=images[1], workers=0)
    shutil.rmtree(data)
    result = export_bundle(tmp_path / "run", tmp_path / "bundle", samples=6)
    assert result.parity["inputs"].startswith("6 generated images") and result.parity["max_abs_diff"] <= 1e-4


def test_the_same_network_exported_again_reuses_its_graph_and_a_damaged_kept_graph_is_made_again(
        image_runs, tmp_path, monkeypatch):
    from headstart.export import graph_cache

    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    kept = tmp_path / "cache" / "onnx"

    said: list[str] = []

    def export(run: Path, name: str) -> bool:
        export_bundle(run, tmp_path / name, samples=4, progress=said.append)
        return json.loads((tmp_path / name / "manifest.json").read_text())["model"]["reused"]

    assert [export(image_runs["finetune"], "first"), export(image_runs["finetune"], "again")] == [False, True]
    assert [line for line in said if "exported before" in line] == [
        f"reusing the graph of the same network, exported before (kept in {kept})"]
    assert (tmp_path / "first" / "model.onnx").read_bytes() == (tmp_path / "again" / "model.onnx").read_bytes()
    graph = next(kept.glob("*.onnx"))
    graph.write_bytes(graph.read_bytes()[:-16])  # damaged on disk: exported again, and kept whole
    assert export(image_runs["finetune"], "after-damage") is False
    assert graph_cache.kept_graph(graph.stem, tmp_path / "copy.onnx")
    monkeypatch.setattr(graph_cache, "KEEP", 1)
    assert export(image_runs["lora"], "other") is False  # another network: its own graph, the older one forgotten
    assert [p.stem for p in kept.glob("*.onnx")] != [graph.stem] and len(list(kept.glob("*.onnx"))) == 1


def test_the_output_folder_is_checked_before_any_work_and_a_previous_bundle_replaced(image_runs, tmp_path):
    run = image_runs["linear-probe"]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="is a folder that is no bundle"):
        export_bundle(run, tmp_path / "notes")
    with pytest.raises(ConfigError, match="would overwrite the run"):
        export_bundle(run, run / "bundle")
    first = export_bundle(run, tmp_path / "bundle", samples=4)
    assert is_bundle(first.out_dir)
    second = export_bundle(run, tmp_path / "bundle", samples=4, opset=21)  # a previous bundle is replaced
    assert Bundle.load(second.out_dir).labels == hs.load(run).classes_
    assert json.loads((second.out_dir / "manifest.json").read_text())["model"]["opset"] == 21
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "notes"]


@pytest.mark.parametrize("args, message", [
    (["--quantize", "int4"], "--quantize must be one of int8"),
    (["--format", "tflite"], "The export format must be one of onnx"),
    (["--min-agreement", "1.5"], "--min-agreement must be between 0 and 1"),
    (["--opset", "13"], "--opset must be between 18 and"),
])
def test_bad_options_give_one_clear_line(image_runs, tmp_path, monkeypatch, capsys, args, message):
    code, _, err = run_cli(monkeypatch, capsys, "export", image_runs["linear-probe"], "--out", tmp_path / "b", *args)
    assert code == 2 and message in " ".join(err.split()) and "Traceback" not in err


# -- real backbones on real data --------------------------------------------------------------------
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"real data sets not found at {SHARED}")


def _flowers_slice(folder: Path, per_class: int) -> Path:
    rnd = random.Random(0)
    for source in sorted((SHARED / "flowers5").iterdir()):
        files = sorted(source.iterdir())
        (folder / source.name).mkdir(parents=True)
        for path in rnd.sample(files, per_class):
            shutil.copy(path, folder / source.name / path.name)
    return folder


@pytest.mark.integration
@needs_shared
def test_efficientnet_lite0_exports_with_parity_and_measured_int8(tmp_path):
    data = _flowers_slice(tmp_path / "flowers", 30)
    fit_run(data, tmp_path / "run", model="efficientnet_lite0", workers=0)
    result = export_bundle(tmp_path / "run", tmp_path / "bundle", quantize="int8", min_agreement=0.0)
    print(json.dumps({"parity": result.parity, "int8": result.quantization}), flush=True)
    assert result.parity["max_abs_diff"] <= 1e-4 and result.parity["samples"] == 30
    samples = export_samples.test_samples(tmp_path / "run", "image")
    float_p = hs.load(tmp_path / "run", device="cpu").predict_proba(hs.LabelledData("image", samples.items))
    int8_p = Bundle.load(tmp_path / "bundle").predict_proba(samples.items)
    flipped = float_p.argmax(1) != int8_p.argmax(1)
    margin = np.diff(np.sort(float_p, axis=1)[:, -2:], axis=1).ravel()  # the float model's top two classes apart
    print(json.dumps({"flipped_margins": margin[flipped].round(3).tolist(), "sure": int((margin >= 0.15).sum())}))
    assert result.quantization["top1_agreement"] == pytest.approx(1 - flipped.mean(), abs=1e-3)
    # A probe of 150 images is unsure of most of its 30 test images (median top-two margin 0.09): int8 (bias-
    # corrected, first convolution in float; see export/quantize.py) flipped 2 of them in one environment and 7
    # in a fresh install of the same pins (float margins 0-0.11). It must never flip a sure one, and must agree
    # far above the naive recipes quantize.py measured (0.15-0.62).
    assert (margin[flipped] < 0.15).all() and (margin >= 0.15).sum() >= 5
    assert result.quantization["top1_agreement"] >= 0.7, result.quantization


@pytest.mark.integration
@needs_shared
def test_minilm_exports_with_parity_and_int8_agreement(tmp_path):
    fit_run(SHARED / "sentiment" / "amazon.txt", tmp_path / "run", model="minilm", workers=0)  # 187 test texts
    result = export_bundle(tmp_path / "run", tmp_path / "bundle", quantize="int8")
    print(json.dumps({"parity": result.parity, "int8": result.quantization}), flush=True)
    assert result.parity["max_abs_diff"] <= 1e-4
    assert result.quantization["top1_agreement"] >= 0.99, result.quantization


def test_predict_with_a_bundle_answers_as_the_run_does(image_runs, images, tmp_path, monkeypatch, capsys):
    run, bundle = image_runs["linear-probe"], tmp_path / "bundle"
    assert run_cli(monkeypatch, capsys, "export", run, "--out", bundle, "--json")[0] == 0
    code, from_run, err = run_cli(monkeypatch, capsys, "predict", run, images[0], "--json")
    assert code == 0, err
    code, from_bundle, err = run_cli(monkeypatch, capsys, "predict", bundle, images[0], "--json")
    assert code == 0, err
    a, b = json.loads(from_run), json.loads(from_bundle)
    assert [r["input"] for r in a] == [r["input"] for r in b] and len(a) == 24
    assert [r["label"] for r in a] == [r["label"] for r in b]
    assert max(abs(r["probabilities"][c] - s["probabilities"][c]) for r, s in zip(a, b) for c in r["probabilities"]) < 1e-4


def test_evaluate_scores_a_bundle_as_deployed_with_the_run_s_metrics(image_runs, images, tmp_path, monkeypatch,
                                                                    capsys):
    run, bundle = image_runs["linear-probe"], tmp_path / "bundle"
    assert run_cli(monkeypatch, capsys, "export", run, "--out", bundle)[0] == 0
    code, from_run, err = run_cli(monkeypatch, capsys, "evaluate", run, images[0], "--json")
    assert code == 0, err
    code, from_bundle, err = run_cli(monkeypatch, capsys, "evaluate", bundle, images[0], "--json")
    assert code == 0, err
    a, b = json.loads(from_run), json.loads(from_bundle)
    assert a["samples"] == b["samples"] == 24 and a["confusion_matrix"] == b["confusion_matrix"]
    assert a["accuracy"] == b["accuracy"] and a["per_class"] == b["per_class"]
    assert "19 of the 24 samples" in " ".join(err.split())  # the bundle knows what its run trained on
    code, from_run, _ = run_cli(monkeypatch, capsys, "evaluate", run, images[0], "--exclude-train", "--json")
    code, from_bundle, err = run_cli(monkeypatch, capsys, "evaluate", bundle, images[0], "--exclude-train", "--json")
    assert code == 0 and json.loads(from_bundle) == json.loads(from_run) and json.loads(from_run)["samples"] == 5
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", bundle, images[0], "--tta")
    assert code == 2 and "exported without test-time augmentation" in " ".join(err.split())
    with pytest.raises(DataError, match="is a bundle `headstart export` wrote, not a run"):
        hs.load(bundle)  # where a run is needed (load, fit --model run:, export), a bundle says what takes it
    unknown = colour_folder(tmp_path / "other", per_class=2, size=37,
                            colours={"red": (200, 40, 40), "violet": (120, 40, 200)})
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", bundle, unknown)
    assert code == 2 and "label 'violet'" in err and "not one of the model's classes" in " ".join(err.split())


def test_bias_correction_gives_int8_weights_the_float_model_s_mean_output_per_channel(tmp_path):
    """1x1 convolutions (one plain, one grouped): the corrected bias with int8-rounded weights gives every
    output channel exactly the float model's mean over the calibration inputs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from headstart.export.quantize import _bias_convs, _bias_corrected, _input_means, _int8_rounding_error

    rng = np.random.default_rng(0)
    w1, b1 = rng.normal(0, 1, (4, 4, 1, 1)).astype(np.float32), rng.normal(0, 1, 4).astype(np.float32)
    w2, b2 = rng.normal(0, 1, (4, 2, 1, 1)).astype(np.float32), rng.normal(0, 1, 4).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], name="plain"),
         helper.make_node("Conv", ["h", "w2", "b2"], ["y"], name="grouped", group=2)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4, 3, 3])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    batches = [{"x": rng.normal(1, 1, (8, 4, 3, 3)).astype(np.float32)} for _ in range(3)]
    means = _input_means(model, [node.input[0] for node in _bias_convs(model.graph)], iter(batches))
    corrected = onnx.load(_bias_corrected(model, means, set(), tmp_path / "c.onnx"))
    params = {t.name: numpy_helper.to_array(t) for t in corrected.graph.initializer}
    assert not np.allclose(params["b1"], b1) and not np.allclose(params["b2"], b2)
    x = np.concatenate([b["x"] for b in batches])
    h = np.einsum("oi,bihw->bohw", w1[:, :, 0, 0], x) + b1[:, None, None]  # the float first layer's output

    def plain(weight, bias):
        return (np.einsum("oi,bihw->bohw", weight[:, :, 0, 0], x) + bias[:, None, None]).mean(axis=(0, 2, 3))

    def grouped(weight, bias):  # output channels 0-1 read input channels 0-1, 2-3 read 2-3
        inputs = h.reshape(len(h), 2, 1, 2, 3, 3).repeat(2, axis=2).reshape(len(h), 4, 2, 3, 3)
        return (np.einsum("oi,boihw->bohw", weight[:, :, 0, 0], inputs) + bias[:, None, None]).mean(axis=(0, 2, 3))

    assert np.allclose(plain(w1 + _int8_rounding_error(w1), params["b1"]), plain(w1, b1), atol=1e-5)
    assert np.allclose(grouped(w2 + _int8_rounding_error(w2), params["b2"]), grouped(w2, b2), atol=1e-5)


def test_smoothing_moves_an_outlier_channel_s_range_into_the_weights_and_keeps_the_float_outputs():
    """Two products read x (channel 0 is 30 times the others); a third shares its weight with a fourth
    product reading another tensor (tied weights), so its input is left as it is."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from headstart.export.smoothing import smoothed_matmuls

    rng = np.random.default_rng(0)
    a, b, tied = (rng.normal(0, 1, (4, 3)).astype(np.float32) for _ in range(3))
    nodes = [helper.make_node("MatMul", ["x", "a"], ["ya"], name="reads_x_1"),
             helper.make_node("MatMul", ["x", "b"], ["yb"], name="reads_x_2"),
             helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "tied"], ["yr"], name="tied_1"),
             helper.make_node("Neg", ["x"], ["n"], name="neg"),
             helper.make_node("MatMul", ["n", "tied"], ["yn"], name="tied_2")]
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ("ya", "yb", "yr", "yn")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])], outputs,
                              [numpy_helper.from_array(v, n) for v, n in ((a, "a"), (b, "b"), (tied, "tied"))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.normal(0, 1, (64, 4)).astype(np.float32) * np.array([30, 1, 1, 1], dtype=np.float32)
    smoothed = smoothed_matmuls(model, iter([{"x": x[:32]}, {"x": x[32:]}]), exclude=set())

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})

    for before, after in zip(run(model), run(smoothed)):
        assert np.allclose(before, after, rtol=1e-5, atol=1e-4)
    muls = [node for node in smoothed.graph.node if node.op_type == "Mul"]
    assert [node.input[0] for node in muls] == ["x"]  # not r or n: their shared weight cannot take two scales
    divisor = numpy_helper.to_array(next(t for t in smoothed.graph.initializer if t.name == muls[0].input[1]))
    ranges = np.abs(x * divisor).max(axis=0)
    assert ranges.max() / np.median(ranges) < 0.5 * np.abs(x).max(axis=0).max() / np.median(np.abs(x).max(axis=0))


def test_calibration_images_come_from_a_table_of_image_paths_too(tmp_path):
    from PIL import Image

    from headstart.export.samples import calibration_images

    for name in ("a", "b", "c"):
        Image.new("RGB", (8, 8), "red").save(tmp_path / f"{name}.png")
    (tmp_path / "images.csv").write_text("image,label\na.png,x\nb.png,y\nc.png,x\n")
    (tmp_path / "texts.csv").write_text("text,label\ngood,x\nbad,y\n")
    found = calibration_images(str(tmp_path / "images.csv"), [str(tmp_path / "b.png")], 5)
    assert [Path(p).name for p in found] == ["a.png", "c.png"]  # the test split's image left out
    assert calibration_images(str(tmp_path / "texts.csv"), [], 5) == []  # no image column: none
