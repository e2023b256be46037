"""What every backbone source builds: a feature module plus its input contract."""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..contract import InputContract, LayerGroup

if TYPE_CHECKING:
    from torch import nn

__all__ = ["Backbone", "BackboneEntry", "feature_cache_key", "file_digest", "layer_groups_from_names",
           "weight_files_in"]


DECODING_VERSION = 2  # bump when sample decoding changes the pixels a backbone sees


@dataclass
class Backbone:
    """A pre-trained network that maps a batch of inputs to feature vectors.

    ``module`` takes an image batch ``(B, 3, H, W)`` or the keyword tensors a tokenizer
    returns, and gives ``(B, contract.feature_dim)``. ``source_head`` is the classifier
    the network was pre-trained with, where it has one (LEEP uses it); ``tokenizer`` is
    set for text backbones.
    """

    name: str
    module: nn.Module
    contract: InputContract
    weights_digest: str
    source_head: nn.Module | None = None
    tokenizer: Any = None

    @property
    def cache_key(self) -> str:
        """Identifies the features this backbone computes: name, weights, contract and how inputs
        are decoded (images larger than needed are decoded at reduced size since version 2)."""
        return feature_cache_key(self.name, self.weights_digest, self.contract)


def feature_cache_key(name: str, weights_digest: str, contract: InputContract) -> str:
    """The feature-cache key of a backbone: what :attr:`Backbone.cache_key` says, from its parts."""
    raw = f"{name}|{weights_digest}|{contract.digest()}|decode-{DECODING_VERSION}"
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class BackboneEntry:
    """A registered backbone: how to build it and whether its weights are on this machine."""

    name: str
    modality: str
    feature_dim: int
    description: str
    build: Callable[..., Backbone]
    available: Callable[[], bool] = field(default=lambda: True)
    # the files whose bytes the built backbone's weights digest reads, given build's ``weights``
    # argument (None: build refuses it); with a catalog record they give its feature-cache key
    # without building it (``registry.feature_identity``)
    weight_files: Callable[[str | Path | None], list[Path] | None] | None = None


def file_digest(paths: Iterable[Path]) -> str:
    """SHA-256 over the bytes of weight files, so a changed file changes every cache key. Files are
    read once per process while their size and modification time stay the same: a warm audit or
    fit in the same session skips re-reading a backbone's weights (minilm's 90 MB: 0.07 s)."""
    files = sorted(Path(p) for p in paths)  # in the order the digest has always read them
    return _digest_of(tuple((str(path.resolve()), *_signature(path)) for path in files))


def weight_files_in(folder: Path) -> list[Path]:
    """A model folder's weight files (``.safetensors``, ``.bin``): what its weights digest reads."""
    return [path for path in folder.iterdir() if path.suffix in (".safetensors", ".bin")]


def _signature(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=64)
def _digest_of(files: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for path, _, _ in files:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def layer_groups_from_names(groups: dict[str, list[str]]) -> tuple[LayerGroup, ...]:
    """Turn ``{group name: [parameter names]}`` into short prefix patterns, keeping the order.

    Each parameter is covered by its shortest dotted prefix that no parameter of another
    group shares (``^blocks\\.3\\.``), so ``contract.json`` stays readable.
    """
    owner = {param: name for name, params in groups.items() for param in params}
    result = []
    for name, params in groups.items():
        prefixes = set()
        for param in params:
            parts = param.split(".")
            for depth in range(1, len(parts) + 1):
                prefix = ".".join(parts[:depth])
                clash = any(owner[other] != name and (other == prefix or other.startswith(prefix + "."))
                            for other in owner)
                if not clash:
                    break
            prefixes.add(prefix)
        patterns = tuple(f"^{re.escape(p)}(\\.|$)" for p in sorted(prefixes))
        if patterns:
            result.append(LayerGroup(name, patterns))
    return tuple(result)
