"""The HTTP service: every endpoint, every error path, micro-batching, a real server process,
and a smoke run of bench/serve_load.py. The model is the committed tiny ONNX reader of
tests/tiny_reader.py (made without TensorFlow), so these tests need only the [serve] extra:
test_serve_tests_run_without_tensorflow runs them again where TensorFlow cannot be imported."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient

from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.infer import Reader
from captcha_ocr.serve import (
    MODEL_ENV,
    SETTINGS_ENV,
    ServeSettings,
    app_from_environment,
    create_app,
)
from tests import tiny_reader
from tests.helpers import png_with_size
from tests.tiny_reader import CHARSET

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"


@pytest.fixture(scope="session")
def model_path() -> Path:
    return tiny_reader.PATH


@pytest.fixture(scope="session")
def reader(model_path: Path) -> Reader:
    return Reader.load(model_path, threads=1)


@pytest.fixture
def client(reader: Reader):
    with TestClient(create_app(reader, ServeSettings())) as test_client:
        yield test_client


def make_client(reader: Reader, **settings) -> TestClient:
    return TestClient(create_app(reader, ServeSettings(**settings)))


def png(seed: int, size: tuple[int, int] = (100, 32), mode: str = "L") -> bytes:
    """A noise image (each seed reads differently)."""
    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    return png_of(pixels.squeeze(-1) if channels == 1 else pixels)


def png_of(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def files(*images: bytes) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("image", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]


def text_fields_only(**fields: str) -> dict:
    """Keyword arguments for a multipart body of text fields only (httpx would urlencode it)."""
    parts = [
        f'--x\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    ]
    content = ("".join(parts) + "--x--\r\n").encode()
    return {"content": content, "headers": {"content-type": "multipart/form-data; boundary=x"}}


def assert_error(response: httpx.Response, status: int, kind: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == kind, body
    assert isinstance(body["detail"], str) and body["detail"]
    return body


# --- endpoints ---------------------------------------------------------------------------------


def test_healthz_and_model_info(client: TestClient, reader: Reader) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["ready"] is True
    info = client.get("/v1/model").json()
    assert info["charset"] == CHARSET and info["blank_index"] == 0
    assert (info["height"], info["width"], info["channels"]) == (32, 100, 1)
    assert info["preset"] == "tiny" and info["version"] == reader.spec.version
    assert info["limits"]["max_images"] == ServeSettings().max_images


def test_model_info_says_when_training_judged_the_model_not_usable(model_path: Path) -> None:
    assert Reader.load(model_path).not_usable == ""
    marked = Reader.load(model_path)
    marked.not_usable = "its best epoch reads 0.0% of the validation captchas"
    with make_client(marked) as c:
        assert c.get("/v1/model").json()["not_usable"] == marked.not_usable


def test_docs_and_openapi_describe_both_bodies(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    read = client.get("/openapi.json").json()["paths"]["/v1/read"]["post"]
    assert set(read["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    assert {p["name"] for p in read["parameters"]} == {
        "allowed_chars",
        "beam_width",
        "min_confidence",
        "positions",
    }
    assert {"200", "400", "413", "415", "422"} <= set(read["responses"])


def test_multipart_reads_several_images_in_order(client: TestClient, reader: Reader) -> None:
    images = [png(1), png(2, (150, 40), "RGB"), png(3), png(4, (60, 20))]
    response = client.post("/v1/read", files=files(*images))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == reader.name and body["version"] == reader.spec.version
    expected = [reader.read(image) for image in images]
    assert len({p.confidence for p in expected}) == len(images)  # order would show
    assert [r["text"] for r in body["results"]] == [p.text for p in expected]
    assert [r["confidence"] for r in body["results"]] == pytest.approx(
        [p.confidence for p in expected], rel=1e-3
    )
    assert not any(r["rejected"] for r in body["results"])


def test_reads_the_text_drawn_for_the_model(client: TestClient) -> None:
    texts = ["ab12", "4dd3", "c"]
    images = [png_of(tiny_reader.draw(text)[..., 0]) for text in texts]
    for response in (
        client.post("/v1/read", files=files(*images)),
        client.post("/v1/read", json={"images": [b64(i) for i in images], "beam_width": 3}),
    ):
        results = response.json()["results"]
        assert [r["text"] for r in results] == texts
        assert all(r["confidence"] > 0.9 for r in results)


def test_json_matches_multipart(client: TestClient) -> None:
    images = [png(5), png(6)]
    by_files = client.post("/v1/read", files=files(*images)).json()
    by_json = client.post(
        "/v1/read", json={"images": [b64(images[0]), "data:image/png;base64," + b64(images[1])]}
    ).json()
    assert by_json["results"] == by_files["results"]  # the same pixels, the same batch


@pytest.mark.parametrize("where", ["json", "form", "query"])
def test_min_confidence_one_rejects_everything(client: TestClient, where: str) -> None:
    images = [png(7), png(8)]
    if where == "json":
        response = client.post(
            "/v1/read", json={"images": [b64(i) for i in images], "min_confidence": 1.0}
        )
    elif where == "form":
        response = client.post("/v1/read", files=files(*images), data={"min_confidence": "1"})
    else:
        response = client.post("/v1/read?min_confidence=1.0", files=files(*images))
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 2
    assert all(r["text"] is None and r["rejected"] is True for r in results)
    assert all(0 <= r["confidence"] < 1 for r in results)


def test_allowed_chars_and_beam_width_are_applied(client: TestClient, reader: Reader) -> None:
    images = [png(seed) for seed in range(10, 16)]
    body = {"images": [b64(i) for i in images], "allowed_chars": "a1", "beam_width": 4}
    results = client.post("/v1/read", json=body).json()["results"]
    expected = [reader.read(i, beam_width=4, allowed_chars="a1") for i in images]
    assert [r["text"] for r in results] == [p.text for p in expected]
    assert all(set(r["text"]) <= {"a", "1"} for r in results)
    unrestricted = client.post("/v1/read", json={"images": body["images"]}).json()["results"]
    assert any(set(r["text"]) - {"a", "1"} for r in unrestricted)  # so the filter did work


def test_body_options_override_query(client: TestClient) -> None:
    response = client.post(
        "/v1/read?min_confidence=1", json={"images": [b64(png(1))], "min_confidence": 0}
    )
    assert response.json()["results"][0]["rejected"] is False


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (b'{"images": [', "malformed_json"),
        (b"\xff\xfe not utf-8", "malformed_json"),
        (b'["a list"]', "malformed_body"),
        (b'{"pictures": []}', "missing_field"),
        (b'{"images": "abc"}', "malformed_body"),
        (b'{"images": [1, 2]}', "malformed_body"),
        (b'{"images": ["not base64!"]}', "invalid_base64"),
        (b'{"images": ["abc"]}', "invalid_base64"),  # bad padding
    ],
)
def test_malformed_json_is_400(client: TestClient, content: bytes, kind: str) -> None:
    response = client.post(
        "/v1/read", content=content, headers={"content-type": "application/json"}
    )
    assert_error(response, 400, kind)


def test_image_field_as_text_is_400(client: TestClient) -> None:
    response = client.post("/v1/read", **text_fields_only(image="abc"))
    assert_error(response, 400, "malformed_body")


def test_broken_multipart_is_400(client: TestClient) -> None:
    response = client.post(
        "/v1/read",
        content=b"--x\r\nContent-Disposition: form-data\r\n\r\nabc\r\n--x--\r\n",
        headers={"content-type": "multipart/form-data; boundary=x"},
    )
    assert_error(response, 400, "malformed_body")


@pytest.mark.parametrize(
    "data",
    [b"just some text, not an image", png(1)[:200], b"GIF89a" + b"\0" * 20],
    ids=["text", "truncated-png", "bad-gif"],
)
def test_not_an_image_is_415(client: TestClient, data: bytes) -> None:
    assert_error(client.post("/v1/read", files=files(png(1), data)), 415, "not_an_image")
    response = client.post("/v1/read", json={"images": [b64(png(1)), b64(data)]})
    body = assert_error(response, 415, "not_an_image")
    assert "images[1]" in body["detail"]


def test_wrong_content_type_is_415(client: TestClient) -> None:
    response = client.post("/v1/read", content=b"abc", headers={"content-type": "text/plain"})
    assert_error(response, 415, "unsupported_media_type")
    response = client.post("/v1/read", data={"beam_width": "2"})  # urlencoded: no files
    assert_error(response, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    ("options", "mention"),
    [
        ({"beam_width": 0}, "beam_width"),
        ({"beam_width": 1000}, "beam_width"),
        ({"beam_width": "wide"}, "beam_width"),
        ({"beam_width": 1.5}, "beam_width"),
        ({"min_confidence": 2}, "min_confidence"),
        ({"min_confidence": -0.1}, "min_confidence"),
        ({"min_confidence": "nan"}, "min_confidence"),
        ({"allowed_chars": "xyz"}, "xyz"),
        ({"allowed_chars": ""}, "allowed_chars"),
        ({"beam_witdh": 3}, "beam_witdh"),
    ],
)
def test_bad_parameters_are_422(client: TestClient, options: dict, mention: str) -> None:
    image = png(1)
    as_json = client.post("/v1/read", json={"images": [b64(image)], **options})
    assert mention in assert_error(as_json, 422, "invalid_parameter")["detail"]
    form = {k: str(v) for k, v in options.items()}
    as_form = client.post("/v1/read", files=files(image), data=form)
    assert mention in assert_error(as_form, 422, "invalid_parameter")["detail"]
    as_query = client.post("/v1/read", files=files(image), params=form)
    assert mention in assert_error(as_query, 422, "invalid_parameter")["detail"]


def test_unknown_form_field_and_repeated_option_are_422(client: TestClient) -> None:
    response = client.post("/v1/read", files=[("file", ("a.png", png(1), "image/png"))])
    assert "'file'" in assert_error(response, 422, "invalid_parameter")["detail"]
    response = client.post("/v1/read?beam_width=2&beam_width=3", files=files(png(1)))
    assert_error(response, 422, "invalid_parameter")


def test_zero_images_is_422(client: TestClient) -> None:
    assert_error(client.post("/v1/read", json={"images": []}), 422, "no_images")
    assert_error(client.post("/v1/read", **text_fields_only(beam_width="2")), 422, "no_images")


def test_too_many_images_is_413(reader: Reader) -> None:
    with make_client(reader, max_images=2) as small:
        assert small.post("/v1/read", files=files(png(1), png(2))).status_code == 200
        for count in (3, 6):  # 6: past the multipart parser's own file limit
            images = [png(i) for i in range(count)]
            assert_error(small.post("/v1/read", files=files(*images)), 413, "too_many_images")
            response = small.post("/v1/read", json={"images": [b64(i) for i in images]})
            assert_error(response, 413, "too_many_images")


def test_image_over_byte_limit_is_413(reader: Reader) -> None:
    small_image, big_image = png(1, (20, 10)), png(2, (300, 100))
    limit = len(small_image) + 10
    assert len(big_image) > limit
    with make_client(reader, max_image_bytes=limit) as small:
        assert small.post("/v1/read", files=files(small_image)).status_code == 200
        assert_error(small.post("/v1/read", files=files(big_image)), 413, "image_too_large")
        response = small.post("/v1/read", json={"images": [b64(small_image), b64(big_image)]})
        assert "images[1]" in assert_error(response, 413, "image_too_large")["detail"]
        just_over = small_image + b"\0" * 11  # refused after base64 decoding, by its size
        response = small.post("/v1/read", json={"images": [b64(just_over)]})
        assert f"{limit + 1:,} bytes" in assert_error(response, 413, "image_too_large")["detail"]
        assert_error(small.post("/v1/read", files=files(just_over)), 413, "image_too_large")


def test_body_over_limit_is_413_from_length_and_while_reading(reader: Reader) -> None:
    with make_client(reader, max_body_bytes=5_000) as small:
        big = {"images": [b64(png(1, (300, 100)))]}
        assert_error(small.post("/v1/read", json=big), 413, "body_too_large")

        def chunks():  # no Content-Length: the bytes are counted as they arrive
            yield b'{"images": ["'
            for _ in range(10):
                yield b"A" * 1000
            yield b'"]}'

        response = small.post(
            "/v1/read", content=chunks(), headers={"content-type": "application/json"}
        )
        assert_error(response, 413, "body_too_large")
        assert small.post("/v1/read", files=files(png(1))).status_code == 200


def test_decompression_bomb_is_refused_from_its_header(client: TestClient, reader: Reader) -> None:
    # Just over the 4 Mpx default, and far past Pillow's own bomb limit: both from the header.
    for width, height in ((2100, 2000), (100_000, 100_000)):
        bomb = png_with_size(width, height)
        response = client.post("/v1/read", files=files(bomb))
        assert_error(response, 413, "image_too_large")
    # The same lie under the limit gets decoded, and fails as truncated: proof that the
    # 413 above came from the header.
    with make_client(reader, max_pixels=10_000_000) as lenient:
        response = lenient.post("/v1/read", files=files(png_with_size(2100, 2000)))
        assert_error(response, 415, "not_an_image")


def test_real_compressible_image_over_pixel_limit_is_413(reader: Reader) -> None:
    buffer = io.BytesIO()
    Image.new("L", (400, 300), 255).save(buffer, "PNG")  # 120,000 pixels in a few hundred bytes
    with make_client(reader, max_pixels=100_000) as small:
        assert_error(small.post("/v1/read", files=files(buffer.getvalue())), 413, "image_too_large")


def test_unknown_route_and_method_have_the_error_shape(client: TestClient) -> None:
    assert_error(client.get("/nowhere"), 404, "not_found")
    assert_error(client.get("/v1/read"), 405, "method_not_allowed")


def test_bad_settings_and_missing_model_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CaptchaOCRError, match="max_batch"):
        ServeSettings(max_batch=0)
    with pytest.raises(CaptchaOCRError, match="batch_wait_ms"):
        ServeSettings(batch_wait_ms=-1)
    from captcha_ocr.cli import main

    assert main(["serve", str(tmp_path / "missing.onnx"), "--port", "1"]) == 2


# --- micro-batching ----------------------------------------------------------------------------


def recording_reader(model_path: Path) -> tuple[Reader, list[int]]:
    """A reader that records the batch size of every model call."""
    reader = Reader.load(model_path, threads=1)
    sizes: list[int] = []
    run = reader.log_probs

    def log_probs(batch: np.ndarray) -> np.ndarray:
        sizes.append(len(batch))
        return run(batch)

    reader.log_probs = log_probs  # type: ignore[method-assign]
    return reader, sizes


async def post_concurrently(app, requests: list[dict]) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        return await asyncio.gather(*(http.post("/v1/read", json=body) for body in requests))


def test_concurrent_requests_share_model_calls(model_path: Path, reader: Reader) -> None:
    batching_reader, sizes = recording_reader(model_path)
    app = create_app(batching_reader, ServeSettings(batch_wait_ms=500, max_batch=64))
    images = [png(seed) for seed in range(20)]
    requests = []
    for i in range(16):  # 1 to 3 images each; every other request restricts its characters
        body: dict = {"images": [b64(images[(i + k) % 20]) for k in range(1 + i % 3)]}
        if i % 2:
            body["allowed_chars"] = "b2"
        requests.append(body)
    responses = asyncio.run(post_concurrently(app, requests))
    # Fewer model calls than requests, and one bigger than any single request: shared calls.
    assert len(sizes) < len(requests) and max(sizes) > 3
    assert sum(sizes) == sum(len(r["images"]) for r in requests)
    for i, (body, response) in enumerate(zip(requests, responses)):
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert len(results) == len(body["images"])
        for k, result in enumerate(results):
            expected = reader.read(images[(i + k) % 20], allowed_chars=body.get("allowed_chars"))
            assert result["text"] == expected.text


def test_batch_wait_zero_gives_each_request_its_own_call(model_path: Path) -> None:
    batching_reader, sizes = recording_reader(model_path)
    app = create_app(batching_reader, ServeSettings(batch_wait_ms=0))
    requests = [{"images": [b64(png(i))] * (1 + i % 2)} for i in range(8)]
    responses = asyncio.run(post_concurrently(app, requests))
    assert all(r.status_code == 200 for r in responses)
    assert sorted(sizes) == sorted(len(r["images"]) for r in requests)


def test_max_batch_splits_and_a_lone_request_does_not_wait(model_path: Path) -> None:
    batching_reader, sizes = recording_reader(model_path)
    with TestClient(
        create_app(batching_reader, ServeSettings(batch_wait_ms=5000, max_batch=4))
    ) as c:
        started = time.perf_counter()
        response = c.post("/v1/read", files=files(*[png(i) for i in range(10)]))
        elapsed = time.perf_counter() - started
    assert response.status_code == 200 and len(response.json()["results"]) == 10
    assert max(sizes) <= 4 and sum(sizes) == 10
    assert elapsed < 2.5  # nobody else was on the way, so the 5 s wait did not apply


def test_app_factory_reads_its_settings_from_the_environment(
    model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MODEL_ENV, str(model_path))
    monkeypatch.setenv(SETTINGS_ENV, '{"max_images": 1, "threads": 1}')
    with TestClient(app_from_environment()) as c:
        assert c.get("/v1/model").json()["limits"]["max_images"] == 1
        assert_error(c.post("/v1/read", files=files(png(1), png(2))), 413, "too_many_images")


# --- a real server, and the load benchmark -----------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("workers", [1, 2])
def test_real_server_process(model_path: Path, tmp_path: Path, workers: int) -> None:
    port = free_port()
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "captcha_ocr",
                "serve",
                str(model_path),
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "no /healthz after 60 s:\n" + log_path.read_text()
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        response = httpx.post(url + "/v1/read", files=files(png(1), png(2)), timeout=30)
        assert response.status_code == 200, response.text
        assert len(response.json()["results"]) == 2
        assert_error(httpx.post(url + "/v1/read", json={"images": ["%%"]}), 400, "invalid_base64")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
            pytest.fail("the server did not exit within 20 s of SIGTERM")
    # uvicorn shuts down cleanly, then re-raises SIGTERM (-15) in a single process
    assert server.returncode in (0, -signal.SIGTERM), log_path.read_text()
    assert "Application shutdown complete" in log_path.read_text()


def test_serve_load_smoke(model_path: Path, tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCH))
    import serve_load

    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\n<!-- serve-load -->\nold\n<!-- /serve-load -->\n")
    argv = ["--model", str(model_path), "--requests", "40", "--concurrency", "4"]
    assert serve_load.main([*argv, "--mixed", "0.25", "--results", str(results)]) == 0
    text = results.read_text()
    assert "old" not in text and text.count("<!-- serve-load -->") == 1
    assert "| 0 (off) | 40 |" in text and "| 2 | 40 |" in text
    assert "| 12 / 12 |" in text  # every bad request got its 4xx


# --- with only the [serve] extra ------------------------------------------------------------


def test_serve_tests_run_without_tensorflow() -> None:
    """This module and test_api_fuzz, run again in a fresh interpreter where TensorFlow, Keras,
    tf2onnx and onnx cannot be imported (tests/serve_extra_only.py), as with only the [serve]
    extra installed. The two tests that start server processes are left out: they import
    nothing more than the ones that run."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "tests.serve_extra_only",
        "-p",
        "no:cacheprovider",
        "-k",
        "not real_server and not serve_load and not without_tensorflow",
        "tests/test_serve.py",
        "tests/test_api_fuzz.py",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-3000:]
