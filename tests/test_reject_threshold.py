"""The recommended reject threshold: chosen at export for 99 % precision on the validation
images, stored in the ONNX metadata, used by ``min_confidence=recommended``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.infer import RECOMMENDED, Reader
from captcha_ocr.metadata import THRESHOLD_KEY, metadata_from_spec
from captcha_ocr.metrics import threshold_for_precision
from tests.helpers import SPEC, write_model


def test_threshold_keeps_the_most_readings_at_the_precision():
    confidences = [0.99, 0.95, 0.9, 0.8, 0.7, 0.6]
    correct = [True, True, True, False, True, False]
    assert threshold_for_precision(confidences, correct, 0.99) == (0.9, 0.5)
    assert threshold_for_precision(confidences, correct, 0.75) == (0.7, 5 / 6)
    assert threshold_for_precision([0.5, 0.4], [False, True], 0.99) == (1.0, 0.0)


def test_ties_are_kept_or_rejected_together():
    assert threshold_for_precision([0.9, 0.9, 0.5], [True, False, True], 0.99) == (1.0, 0.0)


@given(st.lists(st.tuples(st.floats(0, 1), st.booleans()), min_size=1, max_size=60))
def test_what_the_threshold_accepts_meets_the_precision(readings):
    confidences, correct = zip(*readings)
    threshold, share = threshold_for_precision(confidences, correct, 0.9)
    kept = [ok for c, ok in readings if c >= threshold]
    assert share == pytest.approx(len(kept) / len(readings))
    if threshold < 1.0:
        assert sum(kept) >= 0.9 * len(kept)


def _model_with_threshold(tmp_path: Path, value: float | None) -> Path:
    extra = {} if value is None else {THRESHOLD_KEY: json.dumps({"min_confidence": value})}
    return write_model(tmp_path / "m.onnx", metadata=metadata_from_spec(SPEC, **extra))


def test_reader_uses_the_stored_threshold(tmp_path: Path):
    reader = Reader.load(_model_with_threshold(tmp_path, 0.42))
    assert reader.recommended_min_confidence == 0.42
    assert reader.min_confidence(RECOMMENDED) == 0.42
    assert reader.min_confidence(0.3) == 0.3 and reader.min_confidence(None) is None


def test_a_model_without_one_says_so(tmp_path: Path):
    reader = Reader.load(_model_with_threshold(tmp_path, None))
    assert reader.recommended_min_confidence is None
    with pytest.raises(CaptchaOCRError, match="no recommended min_confidence"):
        reader.min_confidence(RECOMMENDED)


@pytest.mark.slow
def test_export_stores_the_threshold_of_the_validation_images(trained_run: Path):
    import onnx

    proto = onnx.load(str(trained_run / "model.onnx"))
    stored = json.loads({p.key: p.value for p in proto.metadata_props}[THRESHOLD_KEY])
    val_images = len((trained_run / "val.csv").read_text().splitlines()) - 1
    assert stored["images"] == val_images and stored["precision"] == 0.99
    assert 0.0 <= stored["min_confidence"] <= 1.0 and 0.0 <= stored["accepts"] <= 1.0
    assert Reader.load(trained_run).recommended_min_confidence == stored["min_confidence"]


def test_serve_min_confidence_recommended(tmp_path: Path):
    from fastapi.testclient import TestClient
    from PIL import Image

    from captcha_ocr.serve import create_app
    from tests.helpers import encode

    image = encode(Image.new("RGB", (SPEC.width, SPEC.height), "white"))
    with TestClient(create_app(_model_with_threshold(tmp_path, 1.0))) as client:
        assert client.get("/v1/model").json()["recommended_min_confidence"] == 1.0
        answer = client.post("/v1/read?min_confidence=recommended", files={"image": image})
        assert answer.status_code == 200 and answer.json()["results"][0]["rejected"] is True
    with TestClient(create_app(_model_with_threshold(tmp_path / "none", None))) as client:
        answer = client.post("/v1/read?min_confidence=recommended", files={"image": image})
        assert answer.status_code == 422 and "no recommended" in answer.json()["detail"]


def test_predict_min_confidence(tmp_path: Path, capsys):
    from PIL import Image

    from tests.helpers import fails, succeeds

    image = tmp_path / "a.png"
    Image.new("RGB", (SPEC.width, SPEC.height), "white").save(image)
    model = str(_model_with_threshold(tmp_path, 1.0))
    out, _ = succeeds(
        ["predict", model, str(image), "--json", "--min-confidence", "recommended"], capsys
    )
    row = json.loads(out)
    assert row["rejected"] is True and row["text"] is None
    out, _ = succeeds(["predict", model, str(image), "--min-confidence", "0"], capsys)
    assert not out.rstrip().endswith("rejected")
    fails(
        ["predict", model, str(image), "--min-confidence", "high"], capsys, "a number from 0 to 1"
    )
    plain = str(_model_with_threshold(tmp_path / "plain", None))
    fails(["predict", plain, str(image), "--min-confidence", "recommended"], capsys,
          "no recommended min_confidence")  # fmt: skip


@pytest.mark.parametrize("count", [20, 100])
def test_a_threshold_on_too_few_validation_images_is_said_to_be_shaky(
    count: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Under 100 validation images one misread costs more than 1 %: export says so."""
    import logging
    import shutil

    from PIL import Image

    from captcha_ocr.data import Sample
    from captcha_ocr.export import add_reject_threshold
    from tests import tiny_reader

    model = tmp_path / "model.onnx"
    shutil.copy(tiny_reader.PATH, model)
    samples = []
    for k in range(count):
        text = "abcd1234"[k % 8] + "abcd1234"[(k // 8) % 8]
        path = tmp_path / f"{k}.png"
        Image.fromarray(tiny_reader.draw(text)[..., 0]).save(path)
        samples.append(Sample(str(path), text))
    with caplog.at_level(logging.WARNING, logger="captcha_ocr"):
        assert add_reject_threshold(model, samples) is not None
    shaky = [r for r in caplog.records if "rests on" in r.getMessage()]
    assert len(shaky) == (1 if count < 100 else 0)
    if shaky:
        assert f"rests on {count} validation images" in shaky[0].getMessage()
