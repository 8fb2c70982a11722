"""Property tests (hypothesis, derandomized: the same examples on every run, no example
database written) of what every entry point rests on: image loading (any bytes, truncated or
corrupted files, any array), the label rule, the charset and CTC greedy decoding."""

from __future__ import annotations

import collections
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays
from PIL import Image

from captcha_ocr.charset import BLANK, Charset, ctc_steps_needed
from captcha_ocr.data import compile_label_pattern, label_from_name, scan_folder
from captcha_ocr.decode import greedy_decode, greedy_decode_batch
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.images import ImageLoadError, load_image
from tests.bad_inputs import base_picture
from tests.helpers import encode

# Deterministic property tests: the same examples on every run, no example database written.
PROPERTY = settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


MAGIC_PREFIXES = [
    b"",
    b"\x89PNG\r\n\x1a\n",
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    b"GIF89a",
    b"GIF87a\x10\x00\x10\x00",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"RIFF\x00\x10\x00\x00WEBPVP8 ",
    b"%!PS-Adobe-3.0 EPSF-3.0\n",
]


@PROPERTY
@given(prefix=st.sampled_from(MAGIC_PREFIXES), body=st.binary(max_size=2048))
def test_any_bytes_load_or_raise_image_load_error(prefix: bytes, body: bytes) -> None:
    try:
        array = load_image(prefix + body, 16, 40, 1)
    except ImageLoadError:
        return
    assert array.shape == (16, 40, 1) and array.dtype == np.uint8


def _valid_files() -> dict[str, bytes]:
    rgb = Image.fromarray(np.dstack([base_picture(9)] * 3)).resize((50, 16))
    return {
        "PNG": encode(rgb, "PNG"),
        "JPEG": encode(rgb, "JPEG", quality=90),
        "GIF": encode(rgb.convert("L"), "GIF"),
        "BMP": encode(rgb, "BMP"),
        "TIFF": encode(rgb, "TIFF"),
        "WEBP": encode(rgb, "WEBP", lossless=True),
    }


VALID_FILES = _valid_files()


@PROPERTY
@given(fmt=st.sampled_from(sorted(VALID_FILES)), data=st.data())
def test_a_truncated_image_fails_or_reads_exactly_the_same(fmt: str, data) -> None:
    full = VALID_FILES[fmt]
    cut = data.draw(st.integers(0, len(full) - 1), label="cut")
    expected = load_image(full, 16, 50, 3)
    try:
        got = load_image(full[:cut], 16, 50, 3)
    except ImageLoadError:
        return
    np.testing.assert_array_equal(got, expected)  # never a half-grey image


@PROPERTY
@given(fmt=st.sampled_from(sorted(VALID_FILES)), data=st.data())
def test_a_corrupted_image_fails_or_reads_at_the_model_shape(fmt: str, data) -> None:
    damaged = bytearray(VALID_FILES[fmt])
    for _ in range(data.draw(st.integers(1, 5), label="flips")):
        damaged[data.draw(st.integers(0, len(damaged) - 1))] = data.draw(st.integers(0, 255))
    try:
        array = load_image(bytes(damaged), 16, 50, 3)
    except ImageLoadError:
        return
    assert array.shape == (16, 50, 3) and array.dtype == np.uint8


def _image_arrays():
    dtypes = st.sampled_from(["uint8", "uint16", "int32", "int64", "float32", "float64", "bool"])
    shapes = array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40) | st.tuples(
        st.integers(1, 40), st.integers(1, 40), st.sampled_from([1, 3, 4])
    )

    def build(dtype: str):
        elements = st.floats(-10, 300, width=32) if dtype.startswith("float") else None
        return arrays(dtype, shapes, elements=elements)

    return dtypes.flatmap(build)


@PROPERTY
@given(
    array=_image_arrays(),
    height=st.integers(1, 48),
    width=st.integers(1, 120),
    channels=st.sampled_from([1, 3]),
)
def test_any_image_array_loads_to_the_model_shape(
    array: np.ndarray, height: int, width: int, channels: int
) -> None:
    before = array.copy()
    loaded = load_image(array, height, width, channels)
    assert loaded.shape == (height, width, channels) and loaded.dtype == np.uint8
    np.testing.assert_array_equal(array, before)  # the caller's array is not modified


@PROPERTY
@given(
    value=st.integers(0, 255),
    shape=st.sampled_from([(5, 7), (5, 7, 1), (5, 7, 3)]),
    channels=st.sampled_from([1, 3]),
)
def test_a_uniform_grey_array_loads_to_the_same_grey(value: int, shape, channels: int) -> None:
    loaded = load_image(np.full(shape, value, np.uint8), 8, 20, channels)
    assert (loaded == value).all()


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((0, 5), np.uint8),
        np.zeros((4, 0, 3), np.uint8),
        np.full((4, 4), np.nan, np.float32),
        np.zeros((4, 4), np.complex64),
        np.zeros((4, 4), object),
        np.zeros((4, 4, 2), np.uint8),
    ],
    ids=["no-rows", "no-columns", "nan", "complex", "object", "two-channels"],
)
def test_arrays_that_are_not_images_are_refused(array: np.ndarray) -> None:
    with pytest.raises(ImageLoadError):
        load_image(array, 8, 8, 1)


# Characters a Linux file name can hold (not "/" or NUL); "\n" is left out because the
# default label pattern's "." does not match it (such a file is reported as unlabeled).
NAME_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00\n")
LABELS = st.text(NAME_CHARS, min_size=1, max_size=24)


@PROPERTY
@given(label=LABELS, k=st.integers(1, 10**6))
def test_label_rule_round_trip(label: str, k: int) -> None:
    pattern = compile_label_pattern(None)
    assert label_from_name(f"dir/{label}_{k}.png", pattern) == label
    if not re.search(r"_\d+$", label):  # else "<label>.png" reads as a repeat of a shorter label
        assert label_from_name(f"{label}.png", pattern) == label
        assert label_from_name(f"{label}.PNG", pattern, ignore_case=True) == label.lower()


@settings(PROPERTY, max_examples=40)
@given(labels=st.lists(LABELS, min_size=1, max_size=8))
def test_synthesized_file_names_scan_back_to_their_labels(labels: list[str]) -> None:
    # Named as synthesize() names repeats: "<label>.png", then "<label>_<k>.png".
    assume(all(len(label.encode()) < 200 for label in labels))
    assume(not any(re.search(r"_\d+$", label) for label in labels))
    seen: collections.Counter[str] = collections.Counter()
    with tempfile.TemporaryDirectory() as folder:
        for label in labels:
            seen[label] += 1
            name = label if seen[label] == 1 else f"{label}_{seen[label] - 1}"
            (Path(folder) / f"{name}.png").write_bytes(b"")
        scan = scan_folder(folder)
    assert sorted(s.label for s in scan.samples) == sorted(labels)
    assert scan.unlabeled == [] and scan.undecodable == []


@PROPERTY
@given(labels=st.lists(st.text(max_size=8), min_size=1, max_size=8), probe=st.text(max_size=8))
def test_charset_encodes_exactly_what_its_labels_hold(labels: list[str], probe: str) -> None:
    assume("".join(labels))
    charset = Charset.from_labels(labels)
    assert Charset.from_labels(reversed(labels)) == charset  # order of the data is irrelevant
    for label in labels:
        assert charset.decode(charset.encode(label)) == label
    missing = "".join(dict.fromkeys(c for c in probe if c not in set("".join(labels))))
    assert charset.unknown(probe) == missing
    if missing:
        with pytest.raises(CaptchaOCRError, match=re.escape(repr(missing))):
            charset.encode(probe)
    else:
        assert charset.decode(charset.encode(probe)) == probe


def collapse(path: np.ndarray) -> list[int]:
    """The CTC rule, written again here: merge repeats, then drop blanks."""
    out, previous = [], None
    for c in path.tolist():
        if c != previous and c != BLANK:
            out.append(c)
        previous = c
    return out


@PROPERTY
@given(
    batch=st.integers(1, 4),
    steps=st.integers(1, 30),
    classes=st.integers(2, 10),
    seed=st.integers(0, 2**32 - 1),
    spread=st.sampled_from([0.5, 3.0, 20.0]),
)
def test_greedy_decoding_invariants(
    batch: int, steps: int, classes: int, seed: int, spread: float
) -> None:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, spread, (batch, steps, classes))
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    decoded = greedy_decode_batch(log_probs)
    assert len(decoded) == batch
    for row, (out, confidence) in zip(log_probs, decoded):
        assert out == collapse(row.argmax(-1))
        assert BLANK not in out and all(0 < c < classes for c in out)
        text = "".join(chr(ord("a") + c) for c in out)
        assert ctc_steps_needed(text) <= steps  # whatever is read fits the model's steps
        assert 0.0 < confidence <= 1.0
        assert confidence == pytest.approx(float(np.prod(np.exp(row).max(-1))), rel=1e-9)
        single = greedy_decode(row)
        assert single[0] == out and single[1] == pytest.approx(confidence)
        # Adding a constant to a step changes no argmax, so no reading.
        shifted = row + rng.normal(0.0, 5.0, (steps, 1))
        assert greedy_decode(shifted)[0] == out
