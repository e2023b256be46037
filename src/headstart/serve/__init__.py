"""``headstart serve``: an exported bundle behind an HTTP JSON API (FastAPI + uvicorn), with
dynamic batching of concurrent requests; torch only when a run must be exported first::

    from headstart.runtime import Bundle
    from headstart.serve import ServeConfig, create_app
    app = create_app(Bundle.load("bundle/"), ServeConfig(max_batch=32))   # any ASGI server runs it

Names are imported on first use, so the CLI can read ``ServeConfig`` without loading the server stack.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {"BodyLimit": "app", "Prediction": "app", "Predictions": "app", "create_app": "app", "metadata": "app",
            "Batcher": "batching", "BatchStats": "batching", "bind_socket": "server", "make_server": "server",
            "open_bundle": "server", "run_server": "server", "ServeConfig": "settings"}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
