from pathlib import Path

import numpy as np
import pytest

import headstart as hs
from headstart.errors import ConfigError, DataError

from helpers import TINY_TIMM, colour_folder, review_table, tiny_bert_folder, tiny_timm_weights


@pytest.fixture
def image_data(tmp_path):
    return hs.ImageFolder(colour_folder(tmp_path / "imgs", per_class=14))


@pytest.fixture
def weights(tmp_path):
    return tiny_timm_weights(tmp_path)


def _transfer(tmp_path, weights, **options):
    return hs.Transfer(f"timm:{TINY_TIMM}", weights=weights, cache_dir=tmp_path / "cache", num_workers=0, **options)


def test_fit_evaluate_save_load_predict_round_trip(tmp_path, image_data, weights):
    train, test = image_data.split(test=0.3, seed=0)
    model = _transfer(tmp_path, weights).fit(train)
    assert model.classes_ == ["blue", "green", "red"]
    metrics = model.evaluate(test)
    assert metrics["accuracy"] >= 0.9  # colours are trivially separable; chance is 1/3
    model.save(tmp_path / "run", metrics={"test": metrics})
    loaded = hs.load(tmp_path / "run", device="cpu", cache_dir=tmp_path / "cache")
    np.testing.assert_allclose(loaded.predict_proba(test), model.predict_proba(test), atol=1e-6)
    assert loaded.predict(test) == model.predict(test)
    assert loaded.contract_ == model.contract_


def test_a_network_fitted_at_another_input_size_reloads_at_it(tmp_path, image_data, weights):
    train, test = image_data.split(test=0.3, seed=0)
    model = hs.Transfer(f"timm:{TINY_TIMM}@40", "finetune", weights=weights, config={"epochs": 1},
                        cache_dir=tmp_path / "cache", num_workers=0).fit(train)
    assert model.contract_.input_size == 40
    model.save(tmp_path / "run")
    loaded = hs.load(tmp_path / "run", device="cpu", cache_dir=tmp_path / "cache")
    assert loaded.contract_.input_size == 40 and loaded.backbone_.name == f"timm:{TINY_TIMM}@40"
    np.testing.assert_allclose(loaded.predict_proba(test), model.predict_proba(test), atol=1e-5)


def test_mlp_head_round_trips_too(tmp_path, image_data, weights):
    train, test = image_data.split(test=0.3, seed=0)
    model = _transfer(tmp_path, weights, config={"head": "mlp", "hidden": 16}).fit(train)
    model.save(tmp_path / "run")
    loaded = hs.load(tmp_path / "run", device="cpu", cache_dir=tmp_path / "cache")
    np.testing.assert_allclose(loaded.predict_proba(test), model.predict_proba(test), atol=1e-6)


def test_text_transfer_with_an_hf_folder(tmp_path):
    data = hs.TextTable(review_table(tmp_path / "reviews.csv"))
    folder = tiny_bert_folder(tmp_path / "bert")
    train, test = data.split(test=0.25, seed=0)
    model = hs.Transfer(f"hf:{folder}", cache_dir=tmp_path / "cache").fit(train)
    assert model.evaluate(test)["accuracy"] > 0.5
    assert model.contract_.modality == "text"


def test_a_model_predicts_on_image_paths_given_directly_and_names_bad_ones(tmp_path, image_data, weights):
    from PIL import Image

    model = _transfer(tmp_path, weights).fit(image_data)
    paths = [image_data.items[5], Path(image_data.items[0])]
    assert model.predict(paths) == model.predict(image_data.subset([5, 0]))
    np.testing.assert_allclose(model.predict_proba(str(paths[1])), model.predict_proba(image_data.subset([0])))
    with pytest.raises(DataError, match="Input 1 is of type Image"):
        model.predict([paths[0], Image.new("RGB", (8, 8))])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):
        model.predict([paths[0], broken])  # one row per input given: a bad file stops, it is not skipped
    folder = tmp_path / "more"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"not a png")
    Image.open(paths[0]).save(folder / "good.png")
    assert len(model.predict(folder)) == 1  # in a folder a bad file is skipped, as `headstart predict` does
    with pytest.raises(DataError, match="evaluate needs labelled data"):
        model.evaluate(paths)


def test_a_text_model_predicts_on_texts_given_directly(tmp_path):
    data = hs.TextTable(review_table(tmp_path / "reviews.csv"))
    model = hs.Transfer(f"hf:{tiny_bert_folder(tmp_path / 'bert')}", cache_dir=tmp_path / "cache").fit(data)
    texts = list(data.items[:3])
    assert model.predict(texts) == model.predict(data.subset([0, 1, 2]))
    assert model.predict(texts[1]) == model.predict(data.subset([1]))
    assert model.predict(np.array(texts)) == model.predict(texts)  # an array (or a pandas Series) of texts
    for bad, message in (([], "list of texts is empty"), ([texts[0], " "], "Input 1 is empty"),
                         ([texts[0], 7], "Input 1 is of type int"), (42, "got int")):
        with pytest.raises(DataError, match=message):
            model.predict_proba(bad)


def test_using_an_unfitted_model_is_a_clear_error(image_data):
    with pytest.raises(hs.NotFittedError, match="not fitted yet"):
        hs.Transfer().predict(image_data)


def test_a_label_the_model_never_saw_is_reported(tmp_path, image_data, weights):
    model = _transfer(tmp_path, weights).fit(image_data)
    other = hs.ImageFolder(colour_folder(tmp_path / "other", per_class=3,
                                         colours={"red": (200, 40, 40), "yellow": (220, 220, 30)}))
    with pytest.raises(DataError, match="yellow"):
        model.evaluate(other)


def test_loading_with_different_backbone_weights_fails_clearly(tmp_path, image_data, weights):
    _transfer(tmp_path, weights).fit(image_data).save(tmp_path / "run")
    tiny_timm_weights(tmp_path, seed=5).replace(weights)
    with pytest.raises(ConfigError, match="not the ones"):
        hs.load(tmp_path / "run", device="cpu")


def test_unknown_strategy_and_options_are_rejected_before_any_work(image_data):
    with pytest.raises(ConfigError, match="Unknown strategy 'linear-prob'. Did you mean 'linear-probe'"):
        hs.Transfer(strategy="linear-prob").fit(image_data)
    with pytest.raises(ConfigError, match="heads does not apply to the linear-probe strategy"):
        hs.Transfer(config={"heads": "mlp"}).fit(image_data)
    with pytest.raises(ConfigError, match="'dropout' option of linear-probe"):
        hs.Transfer(config={"dropout": 1.5}).fit(image_data)


def test_text_data_on_an_image_backbone_is_rejected(tmp_path, weights):
    data = hs.TextTable(review_table(tmp_path / "reviews.csv"))
    with pytest.raises(ConfigError, match="takes image data"):
        _transfer(tmp_path, weights).fit(data)


def test_a_class_without_training_samples_is_named(tmp_path, image_data, weights):
    train = image_data.subset([i for i, label in enumerate(image_data.labels) if label != "red"])
    with pytest.raises(DataError, match="class 'red' has no training samples"):
        _transfer(tmp_path, weights).fit(train, image_data)
