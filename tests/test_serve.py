"""``headstart serve``: a real uvicorn server on loopback, driven by a real httpx client.

Tiny random backbones keep the bundles small; every server but the CLI's runs in a thread of
this process, on a port the OS picked. Each bad input is followed by a good request, so a server
that stopped serving fails the test.
"""

from __future__ import annotations

import io
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from headstart.export import export_bundle
from headstart.integrity import sha256_of
from headstart.runtime import Bundle
from headstart.serve import ServeConfig, bind_socket, create_app, make_server, open_bundle
from headstart.workflows import fit_run

from helpers import TINY_TIMM, colour_folder, review_table, tiny_bert_folder, tiny_timm_weights
from test_cli import run_cli

IMAGE_LIMITS = {"max_bytes": 200_000, "max_pixels": 250_000, "max_inputs": 8}
TEXT_LIMITS = {"max_bytes": 5_000, "max_inputs": 8}


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """(run, its bundle, the images, what serving said): the bundle is the one `serve RUN` exports."""
    root = tmp_path_factory.mktemp("serve-images")
    folder = colour_folder(root / "images", per_class=6, size=37)
    fit_run(folder, root / "run", model=f"timm:{TINY_TIMM}", weights=tiny_timm_weights(root), workers=0)
    said: list[str] = []
    bundle = open_bundle(root / "run", root / "scratch", progress=said.append)
    return root / "run", bundle.folder, sorted(folder.rglob("*.png")), said


@pytest.fixture(scope="module")
def text_bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-text")
    table = review_table(root / "reviews.csv", per_class=10)
    fit_run(table, root / "run", model=f"hf:{tiny_bert_folder(root / 'bert')}", workers=0)
    return export_bundle(root / "run", root / "bundle", samples=8).out_dir


@contextmanager
def serving(bundle_dir: Path, **settings):
    """A real uvicorn server on 127.0.0.1 in a thread; yields an httpx client bound to it."""
    sock = bind_socket("127.0.0.1", 0)
    server = make_server(create_app(Bundle.load(bundle_dir), ServeConfig(**settings)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(15)
    assert not thread.is_alive()


@pytest.fixture(scope="module")
def image_server(image_run):
    with serving(image_run[1], **IMAGE_LIMITS) as client:
        yield client


@pytest.fixture(scope="module")
def text_server(text_bundle):
    with serving(text_bundle, **TEXT_LIMITS) as client:
        yield client


def _files(paths) -> list:
    return [("files", (Path(p).name, Path(p).read_bytes(), "image/png")) for p in paths]


def _expected(bundle_dir: Path, inputs) -> np.ndarray:
    return Bundle.load(bundle_dir).predict_proba([str(i) if isinstance(i, Path) else i for i in inputs])


def _probabilities(response: httpx.Response, labels: list[str]) -> np.ndarray:
    assert response.status_code == 200, response.text
    rows = response.json()["predictions"]
    assert all(row["label"] == max(row["probabilities"], key=row["probabilities"].get) for row in rows)
    return np.array([[row["probabilities"][label] for label in labels] for row in rows])


def _still_serving(client: httpx.Client, good: dict) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.post("/predict", **good).status_code == 200


# -- answers ----------------------------------------------------------------------------------
def test_images_sent_as_multipart_are_predicted_in_order_as_the_bundle_predicts(image_server, image_run):
    paths = image_run[2][::4]  # several files of every class
    labels = Bundle.load(image_run[1]).labels
    got = _probabilities(image_server.post("/predict", files=_files(paths)), labels)
    assert got.shape == (len(paths), 3)
    assert np.abs(got - _expected(image_run[1], paths)).max() < 1e-5


def test_texts_sent_as_json_are_predicted_in_order_as_the_bundle_predicts(text_server, text_bundle):
    texts = ["great, excellent product", "awful, broke quickly", "?", "very happy " * 200]  # "" is refused (422)
    labels = Bundle.load(text_bundle).labels
    got = _probabilities(text_server.post("/predict", json={"texts": texts}), labels)
    assert np.abs(got - _expected(text_bundle, texts)).max() < 1e-4


def test_a_run_is_served_from_a_bundle_exported_first_with_a_line_saying_so(image_run):
    run, bundle_dir, _, said = image_run
    assert said[0] == f"{run} is a run: exporting it to a temporary bundle first (`headstart export {run} --out DIR` " \
                      "keeps one)"
    assert bundle_dir.parent == run.parent / "scratch" and (bundle_dir / "model.onnx").is_file()


def test_health_metadata_and_docs_describe_the_served_bundle(image_server, image_run):
    run, bundle_dir = image_run[:2]
    assert image_server.get("/health").json() == {"status": "ok"}
    meta = image_server.get("/metadata").json()
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert meta["modality"] == "image" and meta["labels"] == ["blue", "green", "red"]
    assert meta["contract"] == json.loads((bundle_dir / "contract.json").read_text())
    assert meta["run"]["manifest_sha256"] == sha256_of(run / "manifest.json") == manifest["run"]["manifest_sha256"]
    assert meta["bundle"]["manifest_sha256"] == sha256_of(bundle_dir / "manifest.json")
    assert meta["serving"]["max_pixels"] == IMAGE_LIMITS["max_pixels"]
    docs = image_server.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    body = image_server.get("/openapi.json").json()["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert list(body) == ["multipart/form-data"]


# -- dynamic batching ---------------------------------------------------------------------------
def _concurrently(client: httpx.Client, paths: list[Path]) -> list[httpx.Response]:
    """One request per path, all released at once from their own threads."""
    start, responses = threading.Barrier(len(paths)), [None] * len(paths)

    def send(i: int) -> None:
        start.wait()
        responses[i] = client.post("/predict", files=_files([paths[i]]))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(paths))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return responses


@pytest.mark.parametrize("max_batch", [32, 1], ids=["batching", "no-batching"])
def test_concurrent_requests_get_their_own_answers_from_batched_model_calls(image_run, max_batch):
    paths = image_run[2][:16]
    expected = _expected(image_run[1], paths)
    with serving(image_run[1], max_batch=max_batch, max_wait_ms=300) as client:
        labels = client.get("/metadata").json()["labels"]
        responses = _concurrently(client, paths)
        stats = client.get("/stats").json()
    got = np.concatenate([_probabilities(response, labels) for response in responses])
    assert np.abs(got - expected).max() < 1e-5  # each request got its own slice back
    assert stats["requests"] == stats["inputs"] == 16
    if max_batch == 1:
        assert stats["model_calls"] == 16 and stats["batch_sizes"] == {"1": 16}
    else:
        assert stats["model_calls"] < 16 and stats["largest_batch"] > 1


# -- bad input: a 4xx naming what is wrong, and the server keeps serving --------------------------
def _jpeg(size=(64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 40, 40)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _png(size) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (40, 60, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGE_CASES = {
    "not an image": ({"files": [("files", ("notes.txt", b"this is not an image", "text/plain"))]}, 422,
                     "files[0] (notes.txt): not an image file"),
    "truncated": ({"files": [("files", ("cut.jpg", _jpeg()[:300], "image/jpeg"))]}, 422, "cut.jpg): truncated image"),
    "over max-pixels": ({"files": [("files", ("big.png", _png((600, 500)), "image/png"))]}, 422,
                        "600x500 pixels is over the bundle's limit of 250000"),
    "over max-bytes": ({"files": [("files", ("huge.jpg", os.urandom(250_000), "image/jpeg"))]}, 413,
                       "limit of 200,000 bytes"),
    "texts to an image model": ({"json": {"texts": ["hello"]}}, 415, "this is an image model"),
    "unknown field": ({"files": [("image", ("a.jpg", _jpeg(), "image/jpeg"))]}, 422, "unknown field 'image'"),
    "a text value, not a file": ({"data": {"files": "a.jpg"}, "files": [("files", ("b.jpg", _jpeg(), "image/jpeg"))]},
                                 422, "files[0] is a text value, not a file"),
    "no file": ({"content": b"", "headers": {"content-type": "multipart/form-data; boundary=x"}}, 422, "no image"),
    "too many files": ({"files": [("files", (f"{i}.jpg", _jpeg(), "image/jpeg")) for i in range(9)]}, 400,
                       "Too many files"),
    "no content type": ({"content": _jpeg()}, 415, "got no Content-Type"),
}


@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_bad_image_requests_are_refused_by_name_and_the_server_keeps_serving(image_server, image_run, case):
    request, status, words = IMAGE_CASES[case]
    response = image_server.post("/predict", **request)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]
    _still_serving(image_server, {"files": _files(image_run[2][:1])})


TEXT_CASES = {
    "empty list": ({"json": {"texts": []}}, 422, "'texts' is empty"),
    "too many texts": ({"json": {"texts": ["a"] * 9}}, 422, "'texts' holds 9 texts, over the limit of 8"),
    "not strings": ({"json": {"texts": ["fine", 3, None]}}, 422, "texts[1] is a number, not a string"),
    "an empty text": ({"json": {"texts": ["fine", " \n"]}}, 422, "texts[1] is empty or only spaces"),
    "unknown field": ({"json": {"texts": ["a"], "language": "en"}}, 422, "unknown field 'language'"),
    "misspelt": ({"json": {"text": ["a"]}}, 422, "unknown field 'text': the body takes only 'texts'. Did you mean"),
    "no texts": ({"json": {}}, 422, "the body has no 'texts'"),
    "not an object": ({"json": ["a", "b"]}, 422, "must be a JSON object"),
    "invalid JSON": ({"content": b"{\"texts\": [", "headers": {"content-type": "application/json"}}, 400,
                     "not valid JSON"),
    "images to a text model": ({"files": [("files", ("a.jpg", _jpeg(), "image/jpeg"))]}, 415,
                               "this is a text model"),
    "over max-bytes": ({"json": {"texts": ["x" * 6_000]}}, 413, "limit of 5,000 bytes"),
    "over max-bytes, streamed": ({"content": iter([b"{\"texts\": [\"" + b"x" * 4_000] * 3),
                                  "headers": {"content-type": "application/json"}}, 413, "limit of 5,000 bytes"),
}


@pytest.mark.parametrize("case", list(TEXT_CASES))
def test_bad_text_requests_are_refused_by_name_and_the_server_keeps_serving(text_server, case):
    request, status, words = TEXT_CASES[case]
    response = text_server.post("/predict", **request)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]
    _still_serving(text_server, {"json": {"texts": ["great"]}})


# -- the command ------------------------------------------------------------------------------
def _line(process: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, "headstart serve printed nothing"
    return process.stdout.readline()


def test_the_serve_command_serves_a_bundle_until_ctrl_c(image_run, tmp_path):
    _, bundle_dir, paths, _ = image_run
    env = {**os.environ, "HEADSTART_CACHE": str(tmp_path / "cache")}
    process = subprocess.Popen([sys.executable, "-m", "headstart", "serve", str(bundle_dir), "--port", "0",
                                "--max-batch", "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env)
    try:
        line = _line(process, 120)
        assert line.startswith("serving image model (3 classes)"), line
        url = line.split(" on ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.get("/metadata").json()["serving"]["max_batch"] == 4
            got = _probabilities(client.post("/predict", files=_files(paths[:2])), Bundle.load(bundle_dir).labels)
        assert np.abs(got - _expected(bundle_dir, paths[:2])).max() < 1e-5
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0 and "server stopped" in err and "Traceback" not in err, err


def test_serving_a_bundle_imports_no_torch():
    code = "import sys, headstart.serve; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False, timeout=120).returncode == 0


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop does not run on Windows")
def test_the_server_parses_http_in_c_on_uvloop(text_bundle):
    """uvicorn falls back to pure-Python h11 and asyncio, silently, when httptools and uvloop are
    missing: a slower server under load (bench/serve_load.py)."""
    config = make_server(create_app(Bundle.load(text_bundle))).config
    config.load()
    assert config.http_protocol_class.__module__ == "uvicorn.protocols.http.httptools_impl"
    loop = config.get_loop_factory()()
    try:
        assert type(loop).__module__.startswith("uvloop")
    finally:
        loop.close()


def test_a_path_that_is_neither_run_nor_bundle_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    (tmp_path / "plain").mkdir()
    code, _, err = run_cli(monkeypatch, capsys, "serve", tmp_path / "plain", "--port", "0")
    assert code == 2 and "plain is neither a bundle" in " ".join(err.split()) and "Traceback" not in err
    code, _, err = run_cli(monkeypatch, capsys, "serve", tmp_path / "missing", "--port", "0")
    assert code == 2 and "missing does not exist" in " ".join(err.split())


def test_a_port_in_use_and_a_bad_limit_are_one_line_and_exit_2(image_run, monkeypatch, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run_cli(monkeypatch, capsys, "serve", image_run[1], "--port", port)
    assert code == 2 and f"port {port} on 127.0.0.1 is in use" in " ".join(err.split())
    code, _, err = run_cli(monkeypatch, capsys, "serve", image_run[1], "--max-batch", "0", "--port", "0")
    assert code == 2 and "'max_batch' option of serve must be an int >= 1" in " ".join(err.split())
