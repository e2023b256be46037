"""Predicting with an exported bundle (``headstart export``) without torch.

Imports only the standard library, numpy, Pillow, onnxruntime, tokenizers and torch-free parts of
headstart, so a deployment installs ``headstart[runtime]`` with ``--no-deps`` beside those::

    from headstart.runtime import Bundle
    bundle = Bundle.load("bundle/")          # checks every file's SHA-256
    bundle.predict(["cat.jpg", "dog.png"])   # or texts, PIL images, (H, W, 3) uint8 arrays
"""

from .bundle import (
                     BUNDLE_KIND,
                     CONTRACT_FILE,
                     LABELS_FILE,
                     MODEL_FILE,
                     OUTPUT_NAME,
                     TOKENIZER_FILE,
                     Bundle,
                     BundleInput,
                     image_contract,
                     is_bundle,
                     open_session,
)

__all__ = ["Bundle", "BundleInput", "is_bundle", "image_contract", "open_session", "BUNDLE_KIND", "MODEL_FILE", "CONTRACT_FILE",
           "LABELS_FILE", "TOKENIZER_FILE", "OUTPUT_NAME"]
