"""The ONNX metadata contract: what export writes, the reader reads back, and one validation
of a model spec for ONNX metadata and run folders alike."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from captcha_ocr.config import ModelSpec, TrainConfig, load_run_config, save_run_config
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.metadata import (
    METADATA_KEY,
    metadata_from_spec,
    spec_from_metadata,
    write_metadata,
)

SPEC = ModelSpec("tiny", "abcd1234", 32, 100, 1, 5)


def test_round_trip_and_readable_copies() -> None:
    metadata = metadata_from_spec(SPEC, quantization="int8")
    assert spec_from_metadata(metadata, "m.onnx") == SPEC
    assert json.loads(metadata[METADATA_KEY]) == dataclasses.asdict(SPEC)
    assert metadata["charset"] == SPEC.charset and metadata["blank_index"] == "0"
    assert (metadata["input_height"], metadata["input_width"], metadata["input_channels"]) == (
        "32",
        "100",
        "1",
    )
    assert metadata["quantization"] == "int8" and metadata["captcha_ocr_version"]
    assert all(isinstance(v, str) for v in metadata.values())


def test_write_metadata_replaces_what_was_there() -> None:
    onnx = pytest.importorskip("onnx")
    proto = onnx.ModelProto()
    write_metadata(proto, {"producer_note": "from tf2onnx"})
    write_metadata(proto, metadata_from_spec(SPEC))
    assert {e.key: e.value for e in proto.metadata_props} == metadata_from_spec(SPEC)


def test_an_onnx_file_of_an_unknown_preset_still_reads() -> None:
    """A reader needs no network builder: a newer version's preset is no reason to refuse."""
    spec = dataclasses.replace(SPEC, preset="huge")
    assert spec_from_metadata(metadata_from_spec(spec), "m.onnx").preset == "huge"


# A field changed to a value no model has -> words each refusal must hold.
IMPOSSIBLE = {
    "empty charset": ({"charset": ""}, "charset is empty"),
    "repeated character": ({"charset": "abca"}, "repeats a character"),
    "2 channels": ({"channels": 2}, "channels must be 1 or 3"),
    "zero height": ({"height": 0}, "height and width must be >= 1"),
    "no label length": ({"max_label_length": 0}, "max_label_length must be >= 1"),
    "shortest over longest": ({"min_label_length": 99}, "min_label_length must be between"),
    "blank index 1": ({"blank_index": 1}, "blank_index must be 0"),
}


@pytest.mark.parametrize("kind", IMPOSSIBLE)
def test_onnx_metadata_and_run_folders_refuse_the_same_specs(kind: str, tmp_path: Path) -> None:
    changes, words = IMPOSSIBLE[kind]
    spec = dataclasses.replace(SPEC, **changes)
    with pytest.raises(CaptchaOCRError, match=words) as from_onnx:
        spec_from_metadata(metadata_from_spec(spec), "m.onnx")
    assert "inconsistent" in str(from_onnx.value) and "captcha-ocr export" in str(from_onnx.value)
    save_run_config(tmp_path, spec, TrainConfig(), {})
    with pytest.raises(CaptchaOCRError, match=words):
        load_run_config(tmp_path)
