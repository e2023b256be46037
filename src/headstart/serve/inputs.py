"""What ``POST /predict`` accepts: uploaded image files, decoded exactly as ``headstart predict``
decodes files, and a JSON list of texts, checked by pydantic with errors that name the field."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictStr, StringConstraints, ValidationError, create_model

from ..errors import DataError, did_you_mean
from ..runtime import Bundle, image_contract
from ..runtime.images import decode_file, prepare_image

__all__ = ["ImageDecoder", "texts_model", "describe_body_error"]

_JSON_TYPES = {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object",
               type(None): "null"}


class ImageDecoder:
    """Uploaded files into the graph's ``(3, size, size)`` input rows, with the pixel cap checked
    from each file's header before it is decoded."""

    def __init__(self, bundle: Bundle, max_pixels: int | None = None) -> None:
        contract = image_contract(bundle.contract)
        self.contract = contract if max_pixels is None else replace(contract, max_pixels=max_pixels or None)

    def __call__(self, uploads: list[tuple[str, bytes]]) -> list[np.ndarray]:
        """The rows of ``(name, content)`` uploads; an unusable one is a DataError naming it."""
        return [self.row(name, content) for name, content in uploads]

    def row(self, name: str, content: bytes) -> np.ndarray:
        # The runtime decodes files (JPEG draft scaling, EXIF, bit depths): the upload becomes one briefly.
        with tempfile.NamedTemporaryFile(prefix="headstart-upload-") as handle:
            handle.write(content)
            handle.flush()
            try:
                image = decode_file(handle.name, self.contract)
            except DataError as exc:
                raise DataError(str(exc).replace(handle.name, name)) from None
        return prepare_image(image, self.contract)


def texts_model(max_inputs: int) -> type[BaseModel]:
    """The JSON body of a text model's ``/predict``: only ``texts``, 1 to ``max_inputs`` strings, each with
    something besides spaces to classify (training refuses empty texts too)."""
    text = Annotated[StrictStr, StringConstraints(pattern=r"\S")]
    texts = (list[text], Field(min_length=1, max_length=max_inputs, description="The texts to classify."))
    return create_model("TextsRequest", __config__=ConfigDict(extra="forbid"), texts=texts)


def _where(loc: tuple) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else ("." if i else "") + str(part)
                   for i, part in enumerate(loc)) or "the body"


def _message(error: dict[str, Any], max_inputs: int) -> str:
    kind, where, given = error["type"], _where(error["loc"]), error.get("input")
    messages = {
        "extra_forbidden": f"unknown field {where!r}: the body takes only 'texts'.{did_you_mean(where, ['texts'])}",
        "missing": "the body has no 'texts': send {\"texts\": [\"...\"]}.",
        "too_short": "'texts' is empty: send at least one text.",
        "too_long": f"'texts' holds {len(given) if isinstance(given, list) else 'too many'} texts, over the limit "
                    f"of {max_inputs} in one request.",
        "string_type": f"{where} is a {_JSON_TYPES.get(type(given), type(given).__name__)}, not a string: "
                       "every text must be a string.",
        "list_type": "'texts' must be a list of strings.",
        "string_pattern_mismatch": f"{where} is empty or only spaces: there is nothing to classify.",
        "model_type": "the body must be a JSON object: {\"texts\": [\"...\"]}.",
    }
    return messages.get(kind, f"{where}: {error['msg']}.")


def describe_body_error(exc: ValidationError, max_inputs: int) -> tuple[int, str]:
    """The status (400 for JSON that does not parse, else 422) and one message naming the first
    wrong field, of a body the text model's pydantic model refused."""
    errors = sorted(exc.errors(), key=lambda error: error["type"] != "extra_forbidden")  # a misspelt field first
    if errors[0]["type"] == "json_invalid":
        return 400, f"the body is not valid JSON ({errors[0].get('ctx', {}).get('error', errors[0]['msg'])})."
    more = f" ({len(errors) - 1} more error{'s' if len(errors) > 2 else ''} in the body)" if len(errors) > 1 else ""
    return 422, _message(errors[0], max_inputs) + more
