"""The HTTP API of ``headstart serve``: FastAPI routes over one bundle and its batcher.

``POST /predict`` takes what the bundle's modality needs (image files as multipart/form-data
``files``, or JSON ``{"texts": [...]}``) and answers ``{"predictions": [{"label",
"probabilities"}]}`` in input order. ``GET /health``, ``/metadata`` (labels, contract, the run
it came from) and ``/stats`` (model calls and batch sizes) describe the server; FastAPI serves
the OpenAPI docs at ``/docs``. Bad input is a 4xx JSON ``{"detail": ...}`` naming what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import asdict

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.types import ASGIApp, Receive, Scope, Send

from .._version import __version__
from ..errors import DataError
from ..integrity import MANIFEST, sha256_of
from ..runtime import Bundle
from .batching import Batcher
from .inputs import ImageDecoder, describe_body_error, texts_model
from .settings import ServeConfig

__all__ = ["create_app", "metadata", "Prediction", "Predictions", "BodyLimit"]

_FIELD = "files"  # the multipart field holding the images
_MAX_FIELDS = 16  # non-file multipart fields parsed (each one is then refused by name)
_EXPECTED = {
    "image": ("multipart/form-data", "this is an image model: send the images as files in the multipart/form-data "
                                     f"field '{_FIELD}'"),
    "text": ("application/json", "this is a text model: send JSON {\"texts\": [\"...\"]} with Content-Type "
                                 "application/json"),
}


class Prediction(BaseModel):
    label: str
    probabilities: dict[str, float]


class Predictions(BaseModel):
    predictions: list[Prediction]


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware refusing (413) a body over ``max_bytes``: at once when Content-Length says
    so, else as soon as the streamed body passes the limit, without reading the rest."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            return await self._refuse(scope, receive, send)
        received, started = 0, False

        async def counted() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise _BodyTooLarge
            return message

        async def tracked(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _BodyTooLarge:
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"the request body is over this server's limit of {self.max_bytes:,} bytes (--max-bytes)."
        await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)


def metadata(bundle: Bundle, config: ServeConfig) -> dict:
    """What ``GET /metadata`` answers: the model's labels and input contract, the run it was
    exported from (path, digest, backbone, strategy), the bundle's digest and the server's limits."""
    manifest = bundle.manifest
    path = bundle.folder / MANIFEST
    return {"modality": bundle.modality, "labels": bundle.labels, "contract": bundle.contract,
            "run": manifest.get("run"),
            "bundle": {"path": str(bundle.folder), "manifest_sha256": sha256_of(path) if path.is_file() else None,
                       "headstart_version": manifest.get("headstart_version"),
                       "quantization": manifest.get("quantization")},
            "serving": asdict(config)}


def _batch_runner(bundle: Bundle) -> Callable[[list], np.ndarray]:
    """One model call on a list of inputs: prepared image rows are stacked; texts are tokenized
    together (padded to the batch's longest)."""
    if bundle.modality == "image":
        name = bundle.session.get_inputs()[0].name
        return lambda rows: bundle.run({name: np.stack(rows)})
    return lambda texts: bundle.predict_proba(texts, batch_size=len(texts))


def _predictions(labels: list[str], rows: list[np.ndarray]) -> JSONResponse:
    """The answer of ``/predict``, encoded here: the route's ``response_model`` documents it, and
    returning a response skips FastAPI's validating it again (a third of a request's own cost)."""
    return JSONResponse({"predictions": [{"label": labels[int(np.argmax(row))],
                                          "probabilities": dict(zip(labels, np.asarray(row, dtype=float).tolist()))}
                                         for row in rows]})


def _require(request: Request, modality: str) -> None:
    """A 415 naming what this model takes, for a body of another content type."""
    expected, hint = _EXPECTED[modality]
    given = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if given != expected:
        raise HTTPException(415, f"{hint}; got {given or 'no Content-Type'}.")


async def _uploads(form: FormData) -> list[tuple[str, bytes]]:
    """``(name, content)`` of each file in the ``files`` field; any other field is refused by name."""
    unknown = sorted(set(form.keys()) - {_FIELD})
    if unknown:
        raise HTTPException(422, f"unknown field {unknown[0]!r}: send the images as files in the field '{_FIELD}'.")
    files = form.getlist(_FIELD)
    if not files:
        raise HTTPException(422, f"no image: send one or more image files in the multipart field '{_FIELD}'.")
    text = next((i for i, f in enumerate(files) if not isinstance(f, UploadFile)), None)
    if text is not None:
        raise HTTPException(422, f"{_FIELD}[{text}] is a text value, not a file: send each image as a file.")
    return [(f"{_FIELD}[{i}]" + (f" ({f.filename})" if f.filename else ""), await f.read())
            for i, f in enumerate(files)]


def _multipart_body(max_inputs: int) -> dict:
    files = {"type": "array", "maxItems": max_inputs, "items": {"type": "string", "format": "binary"},
             "description": "One or more image files (JPEG, PNG, GIF, BMP, WebP, TIFF)."}
    schema = {"type": "object", "required": [_FIELD], "properties": {_FIELD: files}}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


def _add_image_predict(app: FastAPI, bundle: Bundle, config: ServeConfig, batcher: Batcher) -> None:
    decoder = ImageDecoder(bundle, config.max_pixels)

    @app.post("/predict", response_model=Predictions, openapi_extra=_multipart_body(config.max_inputs),
              summary="Classify image files", responses={413: {}, 415: {}, 422: {}})
    async def predict(request: Request) -> JSONResponse:
        """Image files in the multipart field `files`; one prediction per file, in order."""
        _require(request, "image")
        async with request.form(max_files=config.max_inputs, max_fields=_MAX_FIELDS) as form:
            uploads = await _uploads(form)
        rows = await run_in_threadpool(decoder, uploads)
        return _predictions(bundle.labels, await batcher.submit(rows))


def _add_text_predict(app: FastAPI, bundle: Bundle, config: ServeConfig, batcher: Batcher) -> None:
    body_model = texts_model(config.max_inputs)
    schema = {"requestBody": {"required": True,
                              "content": {"application/json": {"schema": body_model.model_json_schema()}}}}

    @app.post("/predict", response_model=Predictions, openapi_extra=schema, summary="Classify texts",
              responses={400: {}, 413: {}, 415: {}, 422: {}})
    async def predict(request: Request) -> JSONResponse:
        """JSON `{"texts": [...]}`; one prediction per text, in order."""
        _require(request, "text")
        try:
            body = body_model.model_validate_json(await request.body())
        except ValidationError as exc:
            status, message = describe_body_error(exc, config.max_inputs)
            raise HTTPException(status, message) from None
        return _predictions(bundle.labels, await batcher.submit(body.texts))


def _add_info_routes(app: FastAPI, described: dict, batcher: Batcher) -> None:
    @app.get("/health", summary="Liveness")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/metadata", summary="Labels, input contract and the run the model came from")
    async def get_metadata() -> dict:
        return described

    @app.get("/stats", summary="Requests, model calls and batch sizes since the server started")
    async def stats() -> dict:
        return batcher.stats.to_dict()


async def _data_error(request: Request, exc: Exception) -> JSONResponse:
    """An input the runtime cannot use (an image that does not decode, one over the pixel cap) is
    the client's error, answered with the runtime's message, not a 500."""
    return JSONResponse({"detail": str(exc)}, status_code=422)


def create_app(bundle: Bundle, config: ServeConfig | None = None) -> FastAPI:
    """The FastAPI app serving ``bundle``; its batcher starts and stops with the app's lifespan."""
    config = config or ServeConfig()
    batcher = Batcher(_batch_runner(bundle), config.max_batch, config.max_wait_ms / 1000)
    described = metadata(bundle, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title=f"headstart: {bundle.modality} classifier, {len(bundle.labels)} classes",
                  version=__version__, lifespan=lifespan, description=__doc__)
    app.add_middleware(BodyLimit, max_bytes=config.max_bytes)
    app.add_exception_handler(DataError, _data_error)
    _add_info_routes(app, described, batcher)
    if bundle.modality == "image":
        _add_image_predict(app, bundle, config, batcher)
    else:
        _add_text_predict(app, bundle, config, batcher)
    return app
