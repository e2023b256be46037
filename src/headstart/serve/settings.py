"""The limits and batching of ``headstart serve``, as one config: the CLI's flags are generated from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..config import Config, at_least, option

__all__ = ["ServeConfig"]


@dataclass
class ServeConfig(Config):
    """How the server batches and what it accepts; every field has a working default."""

    owner: ClassVar[str] = "serve"

    max_batch: int = option(32, "Most inputs one model call takes, gathered from requests that arrive together; "
                            "1: no batching.", at_least(1, int))
    max_wait_ms: float = option(5.0, "Longest an input waits for others to share its model call, in milliseconds.",
                                at_least(0))
    max_bytes: int = option(20_000_000, "Largest request body in bytes; a larger one is refused (413).",
                            at_least(1, int))
    max_pixels: int | None = option(None, "Largest image in pixels (width x height), checked from its header before "
                                    "decoding: the decompression-bomb guard (unset: the bundle's own). 0: no limit.",
                                    at_least(0, int))
    max_inputs: int = option(256, "Most images or texts in one request.", at_least(1, int))
    threads: int | None = option(None, "ONNX Runtime's intra-op threads for the model (default: its own, one per "
                                 "physical core); 1 can be faster on a machine busy with other work.", at_least(1, int))
