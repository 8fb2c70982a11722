"""Robustness of the Python API ``Reader``: every bad image or model gets a clear error, odd but
valid images read exactly like their plain twin, ONNX metadata is data and never code.

The bad inputs are made on the fly in ``tmp_path`` by the factories of tests/bad_inputs.py,
whose docstring says what a right answer is and what "the 8 unreadable kinds" and "the 5 odd
kinds" are.

Covered here ("elsewhere": in another test module, not repeated here):

============ ===== ==========================================================================
entry point  count bad inputs
============ ===== ==========================================================================
``Reader``   37    the 8 unreadable kinds (``read`` of a path or of bytes raises
                   ImageLoadError naming the file; ``read_batch(skip_errors=True)`` gives a
                   ``Prediction.error`` between good readings); the 5 odd kinds; unicode and
                   non-UTF-8 paths; a folder as image; a zero-byte, a truncated and a text
                   ONNX; ONNX without metadata; metadata that is not JSON, a JSON list,
                   missing a key, with an unknown key, of a wrong type, with a repeated
                   charset character, an empty charset, blank index 1, 2 channels, sizes
                   that disagree with the model input, a charset that disagrees with the model
                   output; code in the metadata (Python, a YAML tag: never run); a run folder
                   without configs.yaml, and with a garbage one (both read); allowed_chars
                   outside the charset; batch_size 0
============ ===== ==========================================================================
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.images import ImageLoadError, ImageTooLargeError
from captcha_ocr.infer import Reader
from captcha_ocr.metadata import METADATA_KEY
from tests.bad_inputs import (
    BAD_MODELS,
    NON_UTF8_NAME,
    TWINS,
    UNREADABLE,
    base_picture,
    good_images,
    metadata_with,
    plain_png,
)
from tests.helpers import same_reading, write, write_model


@pytest.mark.parametrize("kind", UNREADABLE)
def test_reader_refuses_an_unreadable_image_and_skips_it_among_good(
    kind: str, random_reader: Reader, tmp_path: Path
) -> None:
    data, suffix = UNREADABLE[kind]()
    bad = write(tmp_path / f"bad{suffix}", data)
    error = ImageTooLargeError if kind == "decompression bomb" else ImageLoadError
    with pytest.raises(error, match=re.escape(str(bad))):
        random_reader.read(bad)
    with pytest.raises(error):
        random_reader.read(data)
    good = good_images(tmp_path)
    results = random_reader.read_batch([good[0], bad, good[1]], skip_errors=True)
    assert same_reading(results[0], random_reader.read(good[0]))
    assert same_reading(results[2], random_reader.read(good[1]))
    assert results[1].text is None and str(bad) in results[1].error


@pytest.mark.parametrize("kind", TWINS)
def test_reader_reads_odd_images_like_their_plain_twin(
    kind: str, random_reader: Reader, tmp_path: Path
) -> None:
    make, suffix = TWINS[kind]
    data, twin = make(base_picture(3))
    path = write(tmp_path / f"odd{suffix}", data)
    expected = random_reader.preprocess(twin)
    np.testing.assert_array_equal(random_reader.preprocess(path), expected)
    np.testing.assert_array_equal(random_reader.preprocess(data), expected)
    assert random_reader.read(path) == random_reader.read(plain_png(twin))


@pytest.mark.parametrize("name", ["äb12_ü€字.png", NON_UTF8_NAME], ids=["unicode", "non-utf8"])
def test_reader_reads_any_file_name(name: str, random_reader: Reader, tmp_path: Path) -> None:
    data = plain_png(base_picture(4))
    path = write(tmp_path / name, data)
    assert random_reader.read(path) == random_reader.read(data)
    assert random_reader.read(str(path)) == random_reader.read(data)


def test_reader_refuses_a_folder_as_an_image(random_reader: Reader, tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="is a folder"):
        random_reader.read(tmp_path)


@pytest.mark.parametrize("kind", BAD_MODELS)
def test_reader_load_refuses_a_bad_model(kind: str, tmp_path: Path) -> None:
    make, words = BAD_MODELS[kind]
    path = tmp_path / "model.onnx"
    make(path)
    with pytest.raises(CaptchaOCRError) as info:
        Reader.load(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    for word in words:
        assert word in message, message


@pytest.mark.parametrize(
    "payload",
    [
        "__import__('os').system('touch {marker}')",
        "!!python/object/apply:os.system ['touch {marker}']",
    ],
)
def test_onnx_metadata_is_data_never_code(payload: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    code = payload.format(marker=marker)
    for metadata in (metadata_with(charset=code), {METADATA_KEY: code}):
        path = write_model(tmp_path / "model.onnx", metadata=metadata)
        with pytest.raises(CaptchaOCRError):
            Reader.load(path)
    assert not marker.exists()


def test_run_folder_reads_without_or_with_a_garbage_configs_yaml(
    random_model: Path, tmp_path: Path
) -> None:
    # The ONNX file describes itself: reading never depends on configs.yaml.
    run = tmp_path / "run"
    shutil.copytree(random_model.parent, run)
    image = plain_png(base_picture(5))
    expected = Reader.load(random_model).read(image)
    assert same_reading(Reader.load(run).read(image), expected)
    (run / "configs.yaml").write_bytes(b"model: !!python/object:os.system [oops\n\xff")
    assert same_reading(Reader.load(run).read(image), expected)


def test_reader_refuses_allowed_chars_outside_the_charset_and_batch_size_0(
    random_reader: Reader,
) -> None:
    image = plain_png(base_picture(1))
    with pytest.raises(CaptchaOCRError, match="cannot output: 'xz'"):
        random_reader.read(image, allowed_chars="axz")
    with pytest.raises(CaptchaOCRError, match="batch_size must be >= 1"):
        random_reader.read_batch([image], batch_size=0)


@pytest.mark.parametrize("preset", [None, "0"])
def test_reading_turns_onnx_runtime_telemetry_off_unless_told(preset, tmp_path) -> None:
    """ONNX Runtime >= 1.29 on Linux sends usage events unless ORT_DISABLE_TELEMETRY is set;
    loading a Reader sets it (before ONNX Runtime starts) but keeps a value the user gave."""
    import subprocess
    import sys

    from tests.tiny_reader import PATH as TINY_READER

    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    if preset is not None:
        env["ORT_DISABLE_TELEMETRY"] = preset
    code = (
        "import os, sys; from captcha_ocr.infer import Reader; "
        f"Reader.load({str(TINY_READER)!r}); "
        "print(os.environ['ORT_DISABLE_TELEMETRY'], 'onnxruntime' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [preset or "1", "True"]
