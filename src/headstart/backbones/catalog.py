"""The packaged backbones' input contracts and sizes, as ``headstart models`` lists them.

Building a backbone, even with random weights, imports torch and timm or transformers; listing
them does not have to. Each record is what ``registry.described(entry)`` builds (the parameters
of the backbone module, its contract); ``tests/test_backbones.py`` compares every one with the
built backbone and prints the new record when an architecture or contract changes.
"""

from __future__ import annotations

__all__ = ["CATALOG"]


def _efficientnet_lite(input_size: int, crop_pct: float, parameters: int) -> dict:
    stages = [{"name": f"stage{i + 1}", "patterns": [rf"^blocks\.{i}(\.|$)"]} for i in range(6)]
    groups = [{"name": "stem", "patterns": [r"^bn1(\.|$)", r"^conv_stem(\.|$)"]}, *stages,
              {"name": "stage7", "patterns": [r"^blocks\.6(\.|$)", r"^bn2(\.|$)", r"^conv_head(\.|$)"]}]
    return {"parameters": parameters, "contract": {
        "modality": "image", "feature_dim": 1280, "layer_groups": groups, "input_size": input_size,
        "crop_pct": crop_pct, "interpolation": "bicubic", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
        "channels_last": True, "tokenizer": None, "max_length": None, "extra": {}}}


_MINILM_GROUPS = [{"name": "embeddings", "patterns": [r"^encoder\.embeddings(\.|$)"]},
                  *({"name": f"layer{i}", "patterns": [rf"^encoder\.encoder\.layer\.{i}(\.|$)"]} for i in range(6)),
                  {"name": "top", "patterns": [r"^encoder\.pooler(\.|$)"]}]

CATALOG: dict[str, dict] = {
    "efficientnet_lite0": _efficientnet_lite(224, 0.875, 3_371_008),
    "efficientnet_lite1": _efficientnet_lite(240, 0.882, 4_135_680),
    "efficientnet_lite2": _efficientnet_lite(260, 0.89, 4_811_072),
    "minilm": {"parameters": 22_713_216, "contract": {
        "modality": "text", "feature_dim": 384, "layer_groups": _MINILM_GROUPS, "input_size": None, "crop_pct": None,
        "interpolation": None, "mean": None, "std": None, "channels_last": False, "tokenizer": "minilm",
        "max_length": 256, "extra": {"pooling": "mean", "normalize": True}}},
}
