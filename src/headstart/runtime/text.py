"""Texts into model inputs with the ``tokenizers`` library alone (no transformers, no torch).

Training tokenizes with the Hugging Face fast tokenizer (``padding=True, truncation=True,
max_length``); its ``tokenizer.json`` is the same Rust tokenizer, so encoding a batch here gives
the same ids, type ids and attention mask, padded to the batch's longest text.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from ..errors import DataError

__all__ = ["TextEncoder"]


class TextEncoder:
    """Encodes batches of texts into the named int64 arrays a text bundle's graph takes."""

    def __init__(self, path: Path, max_length: int, input_names: Sequence[str]) -> None:
        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # noqa: BLE001 - the Rust side raises its own exception type for a bad file
            raise DataError(f"{path} is not a readable tokenizer file ({exc}).") from None
        if self.tokenizer.padding is None:
            raise DataError(f"{path} sets no padding; export the bundle again with `headstart export`.")
        self.tokenizer.enable_truncation(max_length)
        unknown = sorted(set(input_names) - {"input_ids", "attention_mask", "token_type_ids"})
        if unknown:
            raise DataError(f"the bundle's model takes inputs the runtime cannot make: {', '.join(unknown)}.")
        self.input_names = list(input_names)

    def __call__(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        wrong = next((t for t in texts if not isinstance(t, str)), None)
        if wrong is not None:
            raise DataError(f"a text bundle predicts strings. Got a {type(wrong).__name__}.")
        encodings = self.tokenizer.encode_batch(list(texts))
        arrays = {"input_ids": [e.ids for e in encodings], "attention_mask": [e.attention_mask for e in encodings],
                  "token_type_ids": [e.type_ids for e in encodings]}
        return {name: np.asarray(arrays[name], dtype=np.int64) for name in self.input_names}
