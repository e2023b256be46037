"""Test-time augmentation (``tta``): every strategy averages an image's and its mirror image's
probabilities; runs record it; the linear probe caches the mirrored features apart; texts refuse it;
an exported bundle folds the averaging into its graph."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import TINY_TIMM, colour_folder, review_table, run_cli, tiny_timm_weights
from PIL import Image, ImageOps

import headstart as hs
from headstart import features as features_module
from headstart.data import LabelledData
from headstart.errors import ConfigError
from headstart.inference import viewed_backbone
from headstart.runtime import Bundle
from headstart.strategies import get_strategy, strategy_names
from headstart.workflows import fit_run

ONE_EPOCH = {"epochs": 1, "patience": 0}
FITS = [(name, None) for name in strategy_names()] + [("linear-probe", "adabn")]  # adabn: a probe on a new backbone


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("tta-images")
    return colour_folder(root / "images", per_class=8, size=40), tiny_timm_weights(root)


def _mirrored(folder: Path, out: Path) -> Path:
    """The same class folders with every image mirrored left to right (same file names)."""
    for path in sorted(folder.rglob("*.png")):
        target = out / path.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        ImageOps.mirror(Image.open(path)).save(target)
    return out


def _model(images, strategy: str, tmp_path: Path, **params) -> hs.Transfer:
    options = {} if not get_strategy(strategy).trains_backbone else {**ONE_EPOCH, "batch_size": 8}
    return hs.Transfer(f"timm:{TINY_TIMM}", strategy, weights=images[1], config=options, num_workers=0,
                       cache_dir=tmp_path / "cache", device="cpu", **params)


@pytest.mark.parametrize(("strategy", "adapt"), FITS)
def test_tta_is_the_mean_of_the_image_and_its_mirror_image_for_every_strategy(images, tmp_path, strategy, adapt):
    data = hs.ImageFolder(images[0])
    mirror = hs.ImageFolder(_mirrored(images[0], tmp_path / "mirror"))
    assert [Path(p).name for p in mirror.items] == [Path(p).name for p in data.items]
    target = mirror if adapt else None  # an unlabelled domain for adabn: the mirror images will do
    model = _model(images, strategy, tmp_path, adapt=adapt).fit(data, target=target)
    plain, flipped = model.predict_proba(data), model.predict_proba(mirror)
    assert np.abs(plain - flipped).max() > 1e-4  # the random backbone is no mirror-invariant
    averaged = model.set_params(tta=True).predict_proba(data)
    np.testing.assert_allclose(averaged, (plain + flipped) / 2, atol=2e-5)
    np.testing.assert_allclose(averaged.sum(1), 1.0, atol=1e-5)


def test_a_tta_run_records_it_and_loads_predicts_and_evaluates_the_same(images, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    result = fit_run(images[0], run, model=f"timm:{TINY_TIMM}", weights=images[1], strategy="finetune",
                     options=ONE_EPOCH, workers=0, tta=True)
    assert result.transfer.tta and yaml.safe_load((run / "config.yaml").read_text())["tta"] is True
    data = hs.ImageFolder(images[0])
    loaded = hs.load(run, device="cpu")
    assert loaded.tta
    np.testing.assert_allclose(loaded.predict_proba(data), result.transfer.predict_proba(data), atol=1e-6)
    code, stdout, err = run_cli(monkeypatch, capsys, "predict", run, images[0], "--json")
    assert code == 0, err
    rows = json.loads(stdout)
    expected = loaded.predict_proba(LabelledData("image", [row["input"] for row in rows]))
    got = np.array([[row["probabilities"][c] for c in loaded.classes_] for row in rows])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    code, stdout, err = run_cli(monkeypatch, capsys, "evaluate", run, images[0], "--json")
    assert code == 0, err
    assert json.loads(stdout)["accuracy"] == pytest.approx(loaded.evaluate(data)["accuracy"])


def test_evaluate_and_predict_turn_tta_on_for_a_run_fitted_without_it(images, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    fit_run(images[0], run, model=f"timm:{TINY_TIMM}", weights=images[1], workers=0)
    assert "tta" not in yaml.safe_load((run / "config.yaml").read_text())
    data = hs.ImageFolder(images[0])
    with_tta = hs.load(run, device="cpu").set_params(tta=True)
    code, stdout, err = run_cli(monkeypatch, capsys, "evaluate", run, images[0], "--tta", "--json")
    assert code == 0, err
    assert json.loads(stdout)["f1"] == pytest.approx(with_tta.evaluate(data)["f1"])
    code, stdout, err = run_cli(monkeypatch, capsys, "predict", run, data.items[0], "--tta", "--json")
    assert code == 0, err
    row = json.loads(stdout)[0]
    expected = with_tta.predict_proba(LabelledData("image", data.items[:1]))[0]
    np.testing.assert_allclose([row["probabilities"][c] for c in with_tta.classes_], expected, atol=1e-5)


def test_the_linear_probe_caches_the_mirrored_features_under_their_own_key(images, tmp_path, monkeypatch):
    data = hs.ImageFolder(images[0])
    model = _model(images, "linear-probe", tmp_path, tta=True).fit(data)
    first = model.predict_proba(data)
    keys = {p.name for p in (tmp_path / "cache" / "features").iterdir()}
    flipped_key = viewed_backbone(model.backbone_, "hflip").cache_key
    assert keys == {model.backbone_.cache_key, flipped_key}

    def no_embedding(*args, **kwargs):
        raise AssertionError("a second prediction must read every view's features from the cache")

    monkeypatch.setattr(features_module, "embed", no_embedding)
    np.testing.assert_array_equal(model.predict_proba(data), first)


def test_texts_say_tta_does_not_apply(tmp_path, monkeypatch, capsys):
    table = review_table(tmp_path / "reviews.csv", per_class=6)
    with pytest.raises(ConfigError, match="images"):
        hs.Transfer(tta=True).fit(hs.TextTable(table))
    code, _, err = run_cli(monkeypatch, capsys, "fit", table, "--out", tmp_path / "run", "--tta")
    assert code == 2 and "does not apply to a text model" in err
    assert not (tmp_path / "run").exists()


def test_an_exported_tta_run_averages_in_its_graph(images, tmp_path, monkeypatch, capsys):
    run, plain_run = tmp_path / "run", tmp_path / "plain"
    fit_run(images[0], run, model=f"timm:{TINY_TIMM}", weights=images[1], workers=0, tta=True)
    code, stdout, err = run_cli(monkeypatch, capsys, "export", run, "--out", tmp_path / "bundle", "--json")
    assert code == 0, err
    assert json.loads(stdout)["parity"]["max_abs_diff"] <= 1e-4
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["model"]["tta"] == ["hflip"]
    paths = hs.ImageFolder(images[0]).items
    expected = hs.load(run, device="cpu").predict_proba(LabelledData("image", paths))
    assert np.abs(Bundle.load(tmp_path / "bundle").predict_proba(paths) - expected).max() < 1e-4
    code, _, err = run_cli(monkeypatch, capsys, "predict", tmp_path / "bundle", paths[0], "--tta", "--json")
    assert code == 0, err
    fit_run(images[0], plain_run, model=f"timm:{TINY_TIMM}", weights=images[1], workers=0)
    assert run_cli(monkeypatch, capsys, "export", plain_run, "--out", tmp_path / "plain-bundle")[0] == 0
    code, _, err = run_cli(monkeypatch, capsys, "predict", tmp_path / "plain-bundle", paths[0], "--tta")
    assert code == 2 and "exported without test-time augmentation" in err


def test_a_tta_run_quantizes_each_view_like_a_single_model(images, tmp_path):
    """Both views' heads, softmaxes and first convolutions stay in float, as in a model of one view
    (a head found on the first view only left the second's softmax on int8's 1/255 grid)."""
    import onnx

    from headstart.export import export_bundle

    fit_run(images[0], tmp_path / "run", model=f"timm:{TINY_TIMM}", weights=images[1], workers=0, tta=True)
    result = export_bundle(tmp_path / "run", tmp_path / "bundle", quantize="int8", min_agreement=0.0)
    graph = onnx.load(str(result.out_dir / "model.onnx")).graph
    dequantized = {node.output[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    producer = {output: node.op_type for node in graph.node for output in node.output}
    heads = [node for node in graph.node if node.op_type in ("Gemm", "Softmax")]
    assert len(heads) == 4 and not any(name in dequantized for node in heads for name in node.input)
    convs = [node for node in graph.node if node.op_type == "Conv"]
    first = [node for node in convs if producer.get(node.input[0]) in (None, "Slice")]  # the image, or its mirror
    assert len(first) == 2 and not any(node.input[1] in dequantized for node in first)
    assert any(node.input[1] in dequantized for node in convs)
    assert result.quantization["float_layers"] == 2 and result.quantization["layers"] == len(convs)
