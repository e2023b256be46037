import torch
import pytest
import timm

import headstart as hs
from headstart.backbones import build_backbone, list_backbones
from headstart.errors import ConfigError, WeightsUnavailableError

from helpers import TINY_TIMM, tiny_bert_folder, tiny_timm_weights


def test_registry_lists_packaged_backbones_with_contracts():
    rows = {row.name: row for row in list_backbones()}
    assert {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "minilm"} <= set(rows)
    lite0 = rows["efficientnet_lite0"].contract
    assert (lite0["input_size"], lite0["crop_pct"], lite0["interpolation"]) == (224, 0.875, "bicubic")
    assert tuple(lite0["mean"]) == (0.5, 0.5, 0.5) and tuple(lite0["std"]) == (0.5, 0.5, 0.5)
    assert [g["name"] for g in lite0["layer_groups"]][0] == "stem"
    assert rows["efficientnet_lite2"].contract["input_size"] == 260
    minilm = rows["minilm"].contract
    assert minilm["modality"] == "text" and minilm["max_length"] == 256 and minilm["feature_dim"] == 384
    assert [g["name"] for g in minilm["layer_groups"]][:2] == ["embeddings", "layer0"]


def test_the_catalog_models_lists_from_is_what_each_packaged_backbone_builds():
    """`headstart models` reads contracts and sizes from backbones/catalog.py, without torch: each record
    must be what the backbone builds (on a mismatch, the assertion shows the record to paste)."""
    import json

    from headstart.backbones.catalog import CATALOG
    from headstart.backbones.registry import _REGISTRY, described

    assert set(CATALOG) == {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "minilm"}
    for name, entry in _REGISTRY.items():
        if name in CATALOG:
            built = json.loads(json.dumps(described(entry)))
            assert json.loads(json.dumps(CATALOG[name])) == built, f"{name}: {built}"
    rows = {row.name: row for row in list_backbones()}
    assert rows["efficientnet_lite0"].parameters == CATALOG["efficientnet_lite0"]["parameters"]


def test_a_packaged_backbone_s_feature_identity_is_its_built_cache_key_without_building(tmp_path):
    """A warm audit reads features by this key without loading the network: it must be the built one's,
    and say nothing where only building can tell or building would fail."""
    from headstart.backbones import feature_identity

    for name in ("efficientnet_lite0", "efficientnet_lite0@64", "minilm"):
        built = build_backbone(name)
        key, contract = feature_identity(name)
        assert key == built.cache_key and contract.digest() == built.contract.digest(), name
    other = tmp_path / "other.safetensors"  # other weights: another key
    other.write_bytes(b"not the packaged weights")
    assert feature_identity("efficientnet_lite0", other)[0] != feature_identity("efficientnet_lite0")[0]
    assert feature_identity("minilm", other) is None  # minilm takes no --weights: building refuses it
    assert feature_identity(f"timm:{TINY_TIMM}") is None and feature_identity("minilm@128") is None
    assert feature_identity("efficientnet_lite0", tmp_path / "missing.safetensors") is None


def test_a_backbone_registered_outside_the_catalog_is_listed_from_its_architecture():
    from headstart.backbones import BackboneEntry, register_backbone
    from headstart.backbones.registry import _REGISTRY

    entry = BackboneEntry("tiny-listed", "image", 8, "a tiny timm model",
                          build=lambda weights=None, pretrained=True: build_backbone(f"timm:{TINY_TIMM}",
                                                                                      pretrained=False))
    register_backbone(entry)
    try:
        row = next(row for row in list_backbones() if row.name == "tiny-listed")
        assert row.contract["modality"] == "image" and row.parameters > 0
    finally:
        del _REGISTRY["tiny-listed"]


def test_every_parameter_belongs_to_exactly_one_layer_group():
    import re

    backbone = build_backbone("efficientnet_lite0", pretrained=False)
    for name, _ in backbone.module.named_parameters():
        owners = [g.name for g in backbone.contract.layer_groups if any(re.match(p, name) for p in g.patterns)]
        assert len(owners) == 1, (name, owners)


def test_unknown_backbone_suggests_the_near_miss():
    with pytest.raises(ConfigError, match="Did you mean 'efficientnet_lite0'"):
        build_backbone("efficientnet_lte0")


def test_unknown_timm_architecture_is_a_clear_error():
    with pytest.raises(ConfigError, match="timm has no architecture 'resnet5000'"):
        build_backbone("timm:resnet5000")


def test_timm_backbone_loads_local_safetensors_strictly(tmp_path):
    path = tiny_timm_weights(tmp_path)
    backbone = build_backbone(f"timm:{TINY_TIMM}", weights=path)
    reference = timm.create_model(TINY_TIMM, pretrained=False, num_classes=0)
    from safetensors.torch import load_file

    reference.load_state_dict({k: v for k, v in load_file(path).items() if not k.startswith("classifier")})
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(backbone.module(x), reference.eval()(x), atol=1e-6)
    assert backbone.source_head is not None and backbone.source_head.out_features == 1000
    assert backbone.contract.feature_dim == reference.num_features


def test_timm_backbone_reads_torch_files_with_weights_only(tmp_path):
    model = timm.create_model(TINY_TIMM, pretrained=False)
    path = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    assert build_backbone(f"timm:{TINY_TIMM}", weights=path).weights_digest != "random"


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": timm.create_model(TINY_TIMM)}, path)  # a whole module: needs pickle
    with pytest.raises(ConfigError, match="weights_only=True"):
        build_backbone(f"timm:{TINY_TIMM}", weights=path)


def test_weights_of_another_architecture_are_rejected(tmp_path):
    path = tiny_timm_weights(tmp_path, arch="test_resnet")
    with pytest.raises(ConfigError, match="do not fit"):
        build_backbone(f"timm:{TINY_TIMM}", weights=path)


def test_missing_timm_weights_fail_fast_and_say_how_to_provide_them(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsUnavailableError, match="--weights PATH"):
        build_backbone("timm:resnet18.a1_in1k")


def test_hf_backbone_from_a_local_folder(tmp_path):
    folder = tiny_bert_folder(tmp_path / "bert")
    backbone = build_backbone(f"hf:{folder}")
    assert backbone.contract.modality == "text" and backbone.contract.feature_dim == 32
    assert [g.name for g in backbone.contract.layer_groups] == ["embeddings", "layer0", "layer1", "top"]
    batch = backbone.tokenizer(["a b c", "hello"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert backbone.module(**batch).shape == (2, 32)


def test_hf_model_missing_offline_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="never downloads"):
        build_backbone("hf:nobody/no-such-model-xyz")


def test_random_weights_for_the_scratch_baseline():
    backbone = build_backbone("efficientnet_lite0", pretrained=False)
    assert backbone.weights_digest == "random"
    assert hs.build_backbone is build_backbone


def test_a_size_suffix_feeds_an_image_backbone_at_that_size(tmp_path):
    path = tiny_timm_weights(tmp_path)
    base = build_backbone(f"timm:{TINY_TIMM}", weights=path)
    sized = build_backbone(f"timm:{TINY_TIMM}@48", weights=path)
    assert sized.name == f"timm:{TINY_TIMM}@48" and sized.contract.input_size == 48 != base.contract.input_size
    assert sized.contract.crop_pct == base.contract.crop_pct and sized.weights_digest == base.weights_digest
    assert sized.cache_key != base.cache_key  # other pixels, other features


@pytest.mark.parametrize(("name", "message"), [
    (f"timm:{TINY_TIMM}@8", "must be 32 to 1024 pixels, not 8"),
    (f"timm:{TINY_TIMM}@4096", "must be 32 to 1024 pixels, not 4096"),
    ("timm:test_vit3@96", "cannot take 96 px images .*fixed position embeddings"),
])
def test_a_size_a_backbone_cannot_take_is_refused_when_built(name, message):
    with pytest.raises(ConfigError, match=message):
        build_backbone(name, pretrained=False)


def test_a_size_suffix_on_a_text_backbone_is_refused(tmp_path):
    folder = tiny_bert_folder(tmp_path / "bert")
    with pytest.raises(ConfigError, match="sets an image backbone's input size.* takes text"):
        build_backbone(f"hf:{folder}@64")


def test_a_run_folder_named_with_an_at_sign_stays_a_folder(tmp_path):
    from headstart.backbones.sizing import split_input_size

    folder = tmp_path / "sweep@64"
    assert split_input_size(f"run:{folder}") == (f"run:{tmp_path / 'sweep'}", 64)  # no such folder: a size
    folder.mkdir()
    assert split_input_size(f"run:{folder}") == (f"run:{folder}", None)
    assert split_input_size("efficientnet_lite0@128") == ("efficientnet_lite0", 128)


def test_a_size_suffix_on_the_packaged_text_backbone_is_refused_before_it_loads(monkeypatch):
    from headstart.backbones import registry

    monkeypatch.setitem(registry._REGISTRY, "minilm", None)  # building it would fail: it must not be built
    with pytest.raises(ConfigError, match="`@128` sets an image backbone's input size, and minilm takes text"):
        build_backbone("minilm@128")
