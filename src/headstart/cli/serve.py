"""``headstart serve``: a bundle (or a run, exported first) behind an HTTP JSON API."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

import typer

from ..serve.settings import ServeConfig
from . import options as o
from .app import command, err, out

SERVING = "Serving"
SERVE_OPTIONS = o.config_options({"serve": ServeConfig}, panel=lambda owners: SERVING)


def _say(stage: str) -> None:
    err.print(f"{stage}...", style="dim", markup=False, highlight=False)


@command(panel="Deploy")
@o.with_config_options(SERVE_OPTIONS, into="settings")
def serve(
    path: Path = typer.Argument(..., help="A bundle (`headstart export`), or a run (`headstart fit`) to export first."),
    host: str = typer.Option("127.0.0.1", rich_help_panel=SERVING,
                             help="Address to listen on (0.0.0.0: every interface of this machine)."),
    port: int = typer.Option(8000, help="Port to listen on (0: any free port, printed at start).",
                             rich_help_panel=SERVING),
    settings: Optional[dict] = None,
) -> None:
    """Serve a model over HTTP: POST /predict, GET /health, /metadata, /stats; API docs at /docs.

    An image model takes files in the multipart field `files`, a text model JSON
    {"texts": [...]}; both answer {"predictions": [{"label", "probabilities"}]} in order.
    Requests that arrive together share one model call (up to --max-batch inputs, waiting at
    most --max-wait-ms). Ctrl-C stops the server.
    """
    from ..serve import bind_socket, create_app, open_bundle, run_server  # the server stack, only when serving

    config = ServeConfig(**o.given(settings or {}))
    with bind_socket(host, port) as sock, tempfile.TemporaryDirectory(prefix="headstart-serve-") as scratch:
        bundle = open_bundle(path, scratch, progress=_say, threads=config.threads)
        app = create_app(bundle, config)
        url = f"http://{f'[{host}]' if ':' in host else host}:{sock.getsockname()[1]}"
        out.print(f"serving {bundle.modality} model ({len(bundle.labels)} classes) from {path} on {url} "
                  "(API docs: /docs); Ctrl-C stops", markup=False, highlight=False, soft_wrap=True)
        try:
            run_server(app, sock)
        except KeyboardInterrupt:
            pass
    err.print("[dim]server stopped[/]", highlight=False)
