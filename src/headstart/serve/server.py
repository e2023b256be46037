"""Starting ``headstart serve``: the bundle to serve (a run is exported first), the listening
socket (bound before any slow work, so a port in use fails at once) and uvicorn."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from ..errors import ConfigError
from ..runtime import Bundle, is_bundle

__all__ = ["open_bundle", "bind_socket", "make_server", "run_server"]


def open_bundle(path: str | os.PathLike, scratch: str | os.PathLike,
                progress: Callable[[str], None] | None = None, threads: int | None = None) -> Bundle:
    """The bundle at ``path``, checked against its manifest; a run (``headstart fit``) is exported
    into ``scratch`` first, checked against the run as ``headstart export`` checks it.
    ``threads``: ONNX Runtime's intra-op threads."""
    path, say = Path(path), progress or (lambda stage: None)
    if is_bundle(path):
        return Bundle.load(path, threads=threads)
    from ..runs import is_run  # torch is imported only when a run has to be exported

    if not is_run(path):
        what = "is neither a bundle (`headstart export`) nor a run (`headstart fit`)" if path.exists() else \
            "does not exist"
        raise ConfigError(f"{path} {what}: serve takes a bundle folder, or a run it exports first.")
    from ..export import export_bundle

    say(f"{path} is a run: exporting it to a temporary bundle first (`headstart export {path} --out DIR` keeps one)")
    result = export_bundle(path, Path(scratch) / "bundle", progress=say)
    return Bundle.load(result.out_dir, threads=threads)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free one); a port in use, or an address
    this machine does not have, is a ConfigError."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be in [0, 65535]. Got {port} instead.")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host} is not an address of this machine ({exc.strerror}).") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is in use: stop what listens there, or choose another "
                              "with --port.") from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}.") from None
    return sock


def make_server(app: FastAPI, log_level: str = "warning") -> uvicorn.Server:
    """A uvicorn server for ``app`` that logs through the logging already set up (no access log);
    ``server.run(sockets=[sock])`` serves until interrupted or ``server.should_exit`` is set."""
    config = uvicorn.Config(app, log_config=None, log_level=log_level, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=5)
    return uvicorn.Server(config)


def run_server(app: FastAPI, sock: socket.socket, log_level: str = "warning") -> None:
    """Serve ``app`` on ``sock`` until interrupted."""
    make_server(app, log_level).run(sockets=[sock])
