"""Robustness of the HTTP API: unreadable images are a 415 with the JSON error shape, odd
images and any multipart file name read like their plain twins, a bad model is refused at
start.

The bad inputs are made on the fly in ``tmp_path`` by the factories of tests/bad_inputs.py,
whose docstring says what a right answer is and what "the 8 unreadable kinds" and "the 5 odd
kinds" are.

Covered here ("elsewhere": in another test module, not repeated here):

============ ===== ==========================================================================
entry point  count bad inputs
============ ===== ==========================================================================
``HTTP API`` 15    zero-byte (multipart and base64), truncated JPEG, HTML, PostScript, LAB
                   TIFF (415); the 5 odd kinds (200, same reading as the twin); unicode and
                   non-UTF-8 multipart file names (200); a zero-byte model, metadata with a
                   repeated charset character or 2 channels (refused at start); and
                   test_api_fuzz: schemathesis from the OpenAPI schema. Elsewhere: text,
                   truncated PNG, bad GIF, bomb, bad parameters, over-limit bodies
============ ===== ==========================================================================
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.infer import Reader
from tests.bad_inputs import BAD_MODELS, TWINS, UNREADABLE, base_picture, plain_png


@pytest.fixture(scope="module")
def client(random_reader: Reader):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from captcha_ocr.serve import ServeSettings, create_app

    with TestClient(create_app(random_reader, ServeSettings(batch_wait_ms=0))) as test_client:
        yield test_client


def post_files(client, *items: tuple[str | bytes, bytes]):
    """Multipart POST of (file name, data) pairs; a bytes name goes on the wire as is."""
    boundary = "robustness"
    parts = []
    for name, data in items:
        raw_name = name if isinstance(name, bytes) else name.encode("utf-8")
        parts.append(
            f"--{boundary}\r\n".encode()
            + b'Content-Disposition: form-data; name="image"; filename="'
            + raw_name
            + b'"\r\nContent-Type: application/octet-stream\r\n\r\n'
            + data
            + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    return client.post("/v1/read", content=body, headers=headers)


def api_error(response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == kind, body
    assert "\n" not in body["detail"] and "Traceback" not in body["detail"]
    return body["detail"]


@pytest.mark.parametrize(
    "kind", ["zero-byte", "truncated JPEG", "HTML named .jpg", "PostScript named .png", "LAB TIFF"]
)
def test_api_refuses_an_unreadable_image_with_415(kind: str, client) -> None:
    data, _ = UNREADABLE[kind]()
    good = plain_png(base_picture())
    response = post_files(client, ("a.png", good), ("captcha.png", data))
    detail = api_error(response, 415, "not_an_image")
    assert detail.startswith("images[1]") and "<bytes>" not in detail and "<image>" not in detail
    encoded = [base64.b64encode(d).decode() for d in (good, data)]
    api_error(client.post("/v1/read", json={"images": encoded}), 415, "not_an_image")


def test_api_reads_odd_images_like_their_plain_twins(client) -> None:
    odd, plain = [], []
    for i, (make, _) in enumerate(TWINS.values()):
        data, twin = make(base_picture(20 + i))
        odd.append((f"odd{i}", data))
        plain.append((f"plain{i}", plain_png(twin)))
    answer = post_files(client, *odd)
    assert answer.status_code == 200, answer.text
    assert answer.json()["results"] == post_files(client, *plain).json()["results"]
    encoded = [base64.b64encode(data).decode() for _, data in odd]
    assert client.post("/v1/read", json={"images": encoded}).json() == answer.json()


def test_api_reads_unicode_and_non_utf8_file_names(client) -> None:
    data = plain_png(base_picture(2))
    answer = post_files(client, ("äb字.png", data), (b"ab\xff\xfe.png", data), ("x.png", data))
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert len(results) == 3 and results[0] == results[1] == results[2]


@pytest.mark.parametrize(
    "kind", ["zero-byte ONNX", "metadata charset repeats a char", "metadata 2 channels"]
)
def test_api_refuses_a_bad_model_at_start(kind: str, tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from captcha_ocr.serve import create_app

    BAD_MODELS[kind][0](tmp_path / "model.onnx")
    with pytest.raises(CaptchaOCRError, match=r"model\.onnx"):
        create_app(tmp_path / "model.onnx")
