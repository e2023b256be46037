"""Exported graphs kept by content, so that exporting the same network again skips the exporter.

The dynamo exporter takes much of an export (an efficientnet_lite0 probe's int8 export on 2 cores: 39.5 s
the first time, 21.3 s with its graph kept; README, "Deploying"); a user often exports one run again:
int8 after float, or another ``--min-agreement`` after a refusal. The key digests
everything the graph is made from: the network's structure and every tensor of its state, the
graph's inputs, test-time views and opset, and the versions of the exporting libraries, so a kept
graph is the one the exporter would write. A kept file whose bytes no longer match its recorded
digest is deleted and exported again; export checks the graph's parity with the run either way.
The newest ``KEEP`` graphs stay in ``$HEADSTART_CACHE/onnx`` (minilm's is 90 MB).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from pathlib import Path

import torch
from torch import nn

from ..features import default_cache_dir
from ..integrity import sha256_of

__all__ = ["KEEP", "graph_folder", "graph_key", "kept_graph", "keep_graph"]

KEEP = 4


def graph_key(module: nn.Module, example: tuple[torch.Tensor, ...], options: dict) -> str:
    """The digest of what an export of ``module`` on inputs shaped like ``example`` depends on."""
    import onnx
    import onnxscript

    digest = hashlib.sha256(repr((torch.__version__, onnx.__version__, onnxscript.__version__, repr(module),
                                  [(tuple(t.shape), str(t.dtype)) for t in example],
                                  sorted(options.items()))).encode())
    for name, tensor in module.state_dict().items():
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()


def graph_folder() -> Path:
    """Where the graphs are kept: ``onnx`` in the feature cache's folder."""
    return default_cache_dir() / "onnx"


def kept_graph(key: str, target: Path) -> bool:
    """Copy the graph kept under ``key`` to ``target``; False when none is kept (or it was damaged)."""
    graph, recorded = graph_folder() / f"{key}.onnx", graph_folder() / f"{key}.sha256"
    try:
        if sha256_of(graph) != recorded.read_text().strip():
            raise OSError("damaged")
        shutil.copyfile(graph, target)
        os.utime(graph)  # the newest used stays longest
        return True
    except OSError:
        for stale in (graph, recorded):
            with contextlib.suppress(OSError):  # a read-only cache: export as if it were empty
                stale.unlink(missing_ok=True)
        return False


def keep_graph(key: str, source: Path) -> None:
    """Keep ``source`` under ``key`` (atomically), then forget all but the newest ``KEEP`` graphs. A
    cache that cannot be written (read-only, full) is skipped: it only saves time."""
    folder = graph_folder()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{key}.{os.getpid()}.partial"
        shutil.copyfile(source, partial)
        (folder / f"{key}.sha256").write_text(sha256_of(partial))
        os.replace(partial, folder / f"{key}.onnx")
        kept = sorted(folder.glob("*.onnx"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in kept[KEEP:]:
            old.unlink(missing_ok=True)
            old.with_suffix(".sha256").unlink(missing_ok=True)
    except OSError:
        return
