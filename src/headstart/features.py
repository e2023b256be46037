"""Embedding data with a frozen backbone, through a content-addressed on-disk cache.

Each sample's features are stored (:mod:`headstart.feature_cache`) under a key made of the
backbone (name, weights digest, input contract) and the sample's own content digest (file bytes
or text). A second run on the same data reads the cache; a changed file misses it and is
embedded again.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .allocator import keep_freed_memory
from .backbones import Backbone
from .data import DEFAULT_MAX_PIXELS, LabelledData
from .errors import ConfigError
from .feature_cache import FeatureCache

if TYPE_CHECKING:
    import torch

__all__ = ["cached_features", "embed", "extract_features", "share_features", "uncached_count", "default_cache_dir",
           "content_digests", "FeatureCache"]

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]


def default_cache_dir() -> Path:
    """``$HEADSTART_CACHE``, else ``$XDG_CACHE_HOME/headstart``, else ``~/.cache/headstart``."""
    if os.environ.get("HEADSTART_CACHE"):
        return Path(os.environ["HEADSTART_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "headstart"


def content_digests(data: LabelledData, positions: list[int] | None = None) -> list[bytes]:
    """SHA-256 of each sample's content (of those at ``positions``, default all): the file's bytes for
    images, the text for texts."""
    items = data.items if positions is None else [data.items[i] for i in positions]
    if data.modality == "text":
        return [hashlib.sha256(text.encode("utf-8")).digest() for text in items]
    digests = []
    for path in items:
        with open(path, "rb") as handle:
            digests.append(hashlib.file_digest(handle, "sha256").digest())
    return digests


def embed(backbone: Backbone, items: list[str], *, batch_size: int = 64, num_workers: int = 1,
          device: str | torch.device = "cpu", progress: Progress | None = None,
          max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Run the frozen backbone over items (paths or texts) and return float32 features.

    Batches come from :func:`~headstart.data.inference_loader`, as for prediction and AdaBN.
    Texts go in length order, so each batch pads little; rows come back in the caller's order.
    """
    import torch  # here, not above: reading features from the cache needs no torch

    from .data import call_module, inference_loader, to_device

    device, contract = torch.device(device), backbone.contract
    if device.type == "cpu":
        keep_freed_memory()  # each batch's activations reuse the last one's memory (allocator.py)
    module = backbone.module.eval().to(device)
    if contract.channels_last:
        module = module.to(memory_format=torch.channels_last)
    order = list(range(len(items)))
    if contract.modality == "text":
        order.sort(key=lambda i: len(items[i]))
    out = np.empty((len(items), contract.feature_dim), dtype=np.float32)
    done = 0
    loader = inference_loader(backbone, [items[i] for i in order], batch_size=batch_size, num_workers=num_workers,
                              max_pixels=max_pixels)
    with torch.inference_mode():
        for batch in loader:
            features = call_module(module, to_device(batch, device, channels_last=contract.channels_last))
            out[order[done:done + len(features)]] = features.float().cpu().numpy()
            done += len(features)
            if progress:
                progress(done, len(items))
    return out


def extract_features(backbone: Backbone, data: LabelledData, *, cache_dir: str | Path | None = None,
                     use_cache: bool = True, batch_size: int = 64, num_workers: int = 1,
                     device: str | torch.device = "cpu", progress: Progress | None = None) -> np.ndarray:
    """Features of every sample in ``data`` (N x feature_dim), from the cache where possible.

    ``cache_dir`` defaults to :func:`default_cache_dir`; ``use_cache=False`` skips it.
    ``progress(done, total)`` counts samples (a file's copies are embedded once) and is called
    after each batch that had to be computed.
    """
    if data.modality != backbone.contract.modality:
        raise ConfigError(f"Backbone '{backbone.name}' takes {backbone.contract.modality} data, "
                          f"but {data.source} holds {data.modality}.")
    if not use_cache:
        return embed(backbone, data.items, batch_size=batch_size, num_workers=num_workers,
                     device=device, progress=progress, max_pixels=data.max_pixels)
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    with closing(FeatureCache(root, backbone.cache_key, backbone.contract.feature_dim)) as cache:
        digests = content_digests(data)
        found = cache.lookup(digests)
        missing = [i for i in range(len(digests)) if i not in found]
        log.info("Feature cache: %d of %d samples cached for %s", len(found), len(digests), backbone.name)
        out = np.empty((len(digests), backbone.contract.feature_dim), dtype=np.float32)
        for position, row in found.items():
            out[position] = row
        if missing:
            first_of: dict[bytes, int] = {}
            for i in missing:  # one sample of each content: copies are embedded once
                first_of.setdefault(digests[i], i)
            first = list(first_of.values())
            counted = (lambda done, total: progress(len(found) + done * len(missing) // len(first), len(digests))) \
                if progress else None  # counted in samples, cold or warm alike
            fresh = embed(backbone, [data.items[i] for i in first], batch_size=batch_size,
                          num_workers=num_workers, device=device, progress=counted, max_pixels=data.max_pixels)
            unique = {digests[i]: row for i, row in zip(first, fresh)}
            for i in missing:  # duplicate files get the one stored vector: a warm run sees the same numbers
                out[i] = unique[digests[i]]
            cache.store(list(unique), np.stack(list(unique.values())))
        elif progress:
            progress(len(digests), len(digests))
    return out


def cached_features(cache_key: str, feature_dim: int, data: LabelledData, cache_dir: str | Path | None = None,
                    digests: list[bytes] | None = None) -> np.ndarray | None:
    """Every sample's features under ``cache_key`` (a backbone's :attr:`~headstart.backbones.Backbone.cache_key`),
    or None when the cache lacks any: a warm cache read without building the backbone, nor an extra pass.
    ``digests``: the samples' :func:`content_digests`, where the caller has them."""
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    with closing(FeatureCache(root, cache_key, feature_dim)) as cache:
        found = cache.lookup(content_digests(data) if digests is None else digests)
    if len(found) < len(data):
        return None
    out = np.empty((len(data), feature_dim), dtype=np.float32)
    for position, row in found.items():
        out[position] = row
    return out


def share_features(backbone: Backbone, data: LabelledData, *, cache_dir: str | Path | None = None,
                   batch_size: int = 64, num_workers: int = 1, device: str | torch.device = "cpu",
                   progress: Progress | None = None) -> int:
    """Under a launcher, fill the cache with ``data``'s features, each rank embedding a disjoint
    share of what the cache lacks; every rank returns once all are stored, and any of them then
    reads every feature from the cache. Return how many samples this rank embedded.

    Every rank must call it with the same arguments (it is collective); in a job of one it does nothing.
    """
    import torch

    from . import distributed

    device = distributed.join(torch.device(device))
    world = distributed.current()
    if world.size == 1:
        return 0
    if data.modality != backbone.contract.modality:
        raise ConfigError(f"Backbone '{backbone.name}' takes {backbone.contract.modality} data, "
                          f"but {data.source} holds {data.modality}.")
    mine = distributed.shard_positions(len(data), world)  # hashing files is shared out too
    digests: list[bytes] = [b""] * len(data)
    for part in distributed.gather(list(zip(mine, content_digests(data, mine)))):
        for position, digest in part:
            digests[position] = digest
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    with closing(FeatureCache(root, backbone.cache_key, backbone.contract.feature_dim)) as cache:
        missing = distributed.broadcast(_missing_unique(cache, digests) if world.is_main else None)
        share = missing[world.rank::world.size]
        if share:
            fresh = embed(backbone, [data.items[i] for i in share], batch_size=batch_size, num_workers=num_workers, device=device,
                          progress=progress, max_pixels=data.max_pixels)
            cache.store([digests[i] for i in share], fresh)
    distributed.barrier()
    return len(share)


def uncached_count(backbone: Backbone, data: LabelledData, cache_dir: str | Path | None = None) -> int:
    """How many distinct samples of ``data`` a feature pass of ``backbone`` would have to embed (what
    a budget planner needs: a cached pass costs next to nothing)."""
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    with closing(FeatureCache(root, backbone.cache_key, backbone.contract.feature_dim)) as cache:
        return len(_missing_unique(cache, content_digests(data)))


def _missing_unique(cache: FeatureCache, digests: list[bytes]) -> list[int]:
    """Indices into ``digests`` of the first sample of each content the cache lacks."""
    found = cache.lookup(digests)
    first: dict[bytes, int] = {}
    for i, digest in enumerate(digests):
        if i not in found:
            first.setdefault(digest, i)
    return sorted(first.values())

