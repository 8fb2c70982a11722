"""Where each character was read: the CTC time steps that emitted it (decode.greedy_steps and
decode.align), Reader(positions=True), and /v1/read's positions option. The reader is the
committed tiny ONNX reader of tests/tiny_reader.py, which reads character i of a drawn text
at time steps 3i and 3i+1 of 25, so every position here is known exactly."""

from __future__ import annotations

import base64
import io
import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from captcha_ocr.charset import BLANK
from captcha_ocr.config import ModelSpec
from captcha_ocr.decode import align, greedy_decode, greedy_steps, restrict
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.infer import Reader, step_columns
from tests import tiny_reader
from tests.test_decode import PROPERTY, collapse, peaked_log_probs, random_log_probs

# --- decode: greedy_steps and align ----------------------------------------------------------


def path_of(emitted: list[list[int]], classes: list[int], steps: int) -> list[int]:
    """The CTC path that ``emitted`` describes: each class on its steps, blanks elsewhere."""
    path = [BLANK] * steps
    for c, ts in zip(classes, emitted):
        for t in ts:
            path[t] = c
    return path


def check_steps(emitted: list[list[int]], classes: list[int], steps: int) -> None:
    """One non-empty, ascending run of steps per class, the runs in order and disjoint, and
    the path they describe reads ``classes``."""
    assert len(emitted) == len(classes)
    flat = [t for ts in emitted for t in ts]
    assert flat == sorted(set(flat)) and all(0 <= t < steps for t in flat)
    for ts in emitted:
        assert ts and ts == list(range(ts[0], ts[-1] + 1))
    assert list(collapse(tuple(path_of(emitted, classes, steps)))) == classes


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ([0, 0, 0], []),
        ([1, 1, 1], [[0, 1, 2]]),
        ([1, 0, 1], [[0], [2]]),  # a blank between repeats keeps two characters
        ([0, 1, 1, 0, 2, 2, 0], [[1, 2], [4, 5]]),
        ([2, 1, 2, 1], [[0], [1], [2], [3]]),
        ([1, 1, 2, 2, 0, 2], [[0, 1], [2, 3], [5]]),
    ],
)
def test_greedy_steps_are_the_runs_of_the_best_path(path, expected):
    log_probs = peaked_log_probs(path, classes=3)
    assert greedy_steps(log_probs) == expected
    assert align(log_probs, greedy_decode(log_probs)[0]) == expected


@PROPERTY
@given(seed=st.integers(0, 10_000), steps=st.integers(1, 30), classes=st.integers(2, 6))
def test_greedy_steps_agree_with_the_greedy_text(seed, steps, classes):
    log_probs = random_log_probs(seed, steps, classes)
    decoded, _ = greedy_decode(log_probs)
    emitted = greedy_steps(log_probs)
    check_steps(emitted, decoded, steps)
    best = log_probs.argmax(axis=-1)
    for c, ts in zip(decoded, emitted):
        assert all(best[t] == c for t in ts)
    # Every step whose best class is not the blank emitted exactly one character.
    assert sorted(t for ts in emitted for t in ts) == [t for t in range(steps) if best[t] != 0]
    # The best path is also the best path of its own text: forced alignment finds it again.
    assert align(log_probs, decoded) == emitted


@pytest.mark.parametrize(("seed", "steps"), [(0, 3), (1, 4), (2, 4), (3, 5), (4, 5)])
@pytest.mark.parametrize("text", [[1], [2, 1], [1, 1], [2, 2, 1]])
def test_align_finds_the_most_probable_path_of_the_text(seed, steps, text):
    log_probs = random_log_probs(seed, steps, classes=3)
    paths = [p for p in itertools.product(range(3), repeat=steps) if list(collapse(p)) == text]
    if not paths:
        with pytest.raises(CaptchaOCRError, match="no CTC path"):
            align(log_probs, text)
        return
    best = max(log_probs[np.arange(steps), p].sum() for p in paths)
    emitted = align(log_probs, text)
    check_steps(emitted, text, steps)
    found = path_of(emitted, text, steps)
    assert log_probs[np.arange(steps), found].sum() == pytest.approx(best)


def test_align_needs_a_blank_between_repeats():
    log_probs = random_log_probs(0, steps=2, classes=3)
    with pytest.raises(CaptchaOCRError, match="no CTC path of 2 steps"):
        align(log_probs, [1, 1])  # "aa" needs a, blank, a: 3 steps
    assert align(log_probs, []) == []


def test_positions_follow_restricted_decoding():
    # Class 2 wins steps 0 and 1; restricted to {blank, 1}, the same steps read class 1.
    probs = np.array([[0.1, 0.3, 0.6], [0.1, 0.3, 0.6], [0.8, 0.1, 0.1], [0.1, 0.7, 0.2]])
    mask = np.array([True, True, False])
    log_probs = restrict(np.log(probs), mask)
    assert greedy_decode(log_probs)[0] == [1, 1]
    assert greedy_steps(log_probs) == [[0, 1], [3]]
    assert align(log_probs, [1, 1]) == [[0, 1], [3]]


# --- Reader --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reader() -> Reader:
    return Reader.load(tiny_reader.PATH, threads=1)


def drawn_steps(text: str) -> list[tuple[int, ...]]:
    """The tiny reader reads character i of draw(text) at steps 3i and 3i+1."""
    return [(3 * i, 3 * i + 1) for i in range(len(text))]


@pytest.mark.parametrize("text", ["", "a", "ab12", "aab", "4d4d4d44"])
@pytest.mark.parametrize("beam_width", [1, 4])
def test_reader_positions_are_the_steps_that_read_each_character(reader, text, beam_width):
    prediction = reader.read(tiny_reader.draw(text), beam_width=beam_width, positions=True)
    assert prediction.text == text
    assert "".join(p.char for p in prediction.positions) == text
    assert [p.steps for p in prediction.positions] == drawn_steps(text)
    steps = tiny_reader.STEPS  # a left-to-right network: step t covers the t-th 25th
    assert [p.span for p in prediction.positions] == [
        pytest.approx((a / steps, (b + 1) / steps)) for a, b in drawn_steps(text)
    ]


def test_reader_positions_only_when_asked(reader):
    image = tiny_reader.draw("ab12")
    plain = reader.read(image)
    assert plain.positions is None
    located = reader.read(image, positions=True)
    assert (located.text, located.confidence) == (plain.text, plain.confidence)
    batch = reader.read_batch([image, tiny_reader.draw("cd")], positions=True)
    assert ["".join(p.char for p in b.positions) for b in batch] == ["ab12", "cd"]
    assert all(b.positions is None for b in reader.read_batch([image]))


def test_reader_positions_with_allowed_chars(reader):
    image = tiny_reader.draw("ab12")
    for beam_width in (1, 3):
        prediction = reader.read(image, beam_width, allowed_chars="ab", positions=True)
        assert set(prediction.text) <= set("ab") and len(prediction.text) == 4
        assert "".join(p.char for p in prediction.positions) == prediction.text
        assert [p.steps for p in prediction.positions] == drawn_steps("ab12")


def test_step_columns_follow_the_network():
    reference = ModelSpec("reference", "abc", 50, 200, 3, 5)
    assert step_columns(reference, 52) == 13  # the tutorial's 4x13 map, read row by row
    assert step_columns(reference, 50) == 50  # not its layout: read as left to right
    assert step_columns(ModelSpec("default", "abc", 50, 200, 1, 5), 25) == 25
    assert step_columns(tiny_reader.SPEC, tiny_reader.STEPS) == tiny_reader.STEPS


# --- the API -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(reader):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from captcha_ocr.serve import ServeSettings, create_app

    with TestClient(create_app(reader, ServeSettings())) as test_client:
        yield test_client


def png(text: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(tiny_reader.draw(text)[..., 0]).save(buffer, "PNG")
    return buffer.getvalue()


def expected_positions(text: str) -> list[dict]:
    steps = tiny_reader.STEPS
    return [
        {
            "char": c,
            "steps": [a, b],
            "span": [pytest.approx(a / steps), pytest.approx((b + 1) / steps)],
        }
        for c, (a, b) in zip(text, drawn_steps(text))
    ]


def test_api_positions_by_query_json_and_form(client):
    b64 = base64.b64encode(png("ab12")).decode()
    answers = [
        client.post("/v1/read?positions=true", json={"images": [b64]}),
        client.post("/v1/read", json={"images": [b64], "positions": True}),
        client.post("/v1/read", files=[("image", png("ab12"))], data={"positions": "true"}),
    ]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        (result,) = answer.json()["results"]
        assert result["text"] == "ab12"
        assert result["time_steps"] == tiny_reader.STEPS
        assert result["positions"] == expected_positions("ab12")


def test_api_without_positions_is_unchanged(client):
    b64 = base64.b64encode(png("cd")).decode()
    for body in ({"images": [b64]}, {"images": [b64], "positions": False}):
        (result,) = client.post("/v1/read", json=body).json()["results"]
        assert set(result) == {"text", "confidence", "rejected"}


def test_api_positions_with_beam_search_allowed_chars_and_rejection(client):
    b64 = base64.b64encode(png("a4")).decode()
    beam = client.post("/v1/read", json={"images": [b64], "positions": True, "beam_width": 4})
    assert beam.json()["results"][0]["positions"] == expected_positions("a4")
    restricted = client.post(
        "/v1/read", json={"images": [b64], "positions": True, "allowed_chars": "ab"}
    ).json()["results"][0]
    assert "".join(p["char"] for p in restricted["positions"]) == restricted["text"]
    assert set(restricted["text"]) <= {"a", "b"}
    rejected = client.post(
        "/v1/read", json={"images": [b64, b64], "positions": True, "min_confidence": 1.0}
    ).json()["results"]
    assert [(r["text"], r["rejected"], r["positions"]) for r in rejected] == [
        (None, True, None)
    ] * 2


def test_api_positions_must_be_a_boolean(client):
    answer = client.post("/v1/read?positions=maybe", files=[("image", png("a"))])
    assert answer.status_code == 422
    assert answer.json()["error"] == "invalid_parameter"
    assert "positions" in answer.json()["detail"]


def test_api_documents_positions(client):
    schema = client.get("/openapi.json").json()
    assert "positions" in schema["components"]["schemas"]["ReadResult"]["properties"]
    query = [p["name"] for p in schema["paths"]["/v1/read"]["post"]["parameters"]]
    assert "positions" in query
