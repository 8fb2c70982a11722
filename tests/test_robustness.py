"""Robustness: every bad input gets a clear answer, and no work is ever lost.

Each bad input is made on the fly in ``tmp_path`` by a small factory, then fed to each entry
point. The answer is one of: a one-line ``error: ...`` that says what to do and a non-zero
exit (CLI), a :class:`CaptchaOCRError` with a helpful message (Python API), a 4xx with the
JSON error shape (HTTP), or, for one bad file among good ones, a reported skip (a warning
with the count, or a ``Prediction`` with ``error``); never a traceback, a hang or a wrong
reading. Odd but valid images (1x1, 16-bit, palette, transparent, animated) must read exactly
like their plain twin. Property tests (hypothesis, derandomized) cover image loading, the
label rule, the charset and CTC greedy decoding.

Distinct bad inputs covered here, per entry point ("elsewhere": already covered by
test_cli_errors, test_train, test_download, test_serve or test_config, not repeated here).
"The 8 unreadable kinds" are: a zero-byte file, a truncated PNG, a truncated JPEG, text named
.png, HTML named .jpg, PostScript named .png (a program: never handed to Ghostscript), a
decompression bomb (100,000 x 100,000 in its header) and a LAB TIFF (a mode Pillow cannot
convert). "The 5 odd kinds" are: 1x1, 16-bit PNG, palette PNG, transparent PNG, animated GIF.

============ ===== ==========================================================================
entry point  count bad inputs
============ ===== ==========================================================================
``train``    38    the 8 unreadable kinds among good files (skipped, counted); the 5 odd kinds,
                   a unicode file name, duplicate labels (used); a non-UTF-8 file name
                   (skipped, reported); a label with a space (warned); a folder of only
                   unreadable files, without and with readable headers; only non-UTF-8 file
                   names; a label longer than the model can encode; --strict with one bad
                   file; a labels CSV that is not UTF-8; a full disk; --out that is (or is
                   under) a file; --resume with configs.yaml missing, with a !!python tag (not
                   run), an unknown key, a wrong type, an impossible value, a repeated charset
                   character, bad channels, not a mapping, not UTF-8, empty; a damaged
                   last.keras; a last.keras with a Lambda layer (refused in safe mode, not
                   run); a damaged state.json. Elsewhere: empty folder, unknown config key,
                   unwritable run folder (library)
``evaluate`` 24    the 8 unreadable kinds among good files (counted as wrong and reported); the
                   5 odd kinds (read); unicode paths in a labels CSV; duplicate labels; a
                   non-UTF-8 file name among good ones (skipped, reported); only non-UTF-8
                   names; a folder of only unreadable files; an empty folder; a label with a
                   space; a label with a character outside the charset; a label longer than
                   the model can output; a labels CSV that is not UTF-8; a truncated ONNX
``predict``  25    the 8 unreadable kinds among good files (skipped, counted, exit 1); the 5
                   odd kinds (same reading as their twin); unicode and non-UTF-8 file names
                   (plain and --json output); one unreadable file alone; a folder of only
                   unreadable files; an empty folder; a missing image path; --allowed-chars
                   outside the charset; a zero-byte ONNX; metadata with a repeated charset
                   character; metadata sizes that disagree with the model; a run folder
                   without configs.yaml, and with a garbage one (both read). Elsewhere:
                   random-bytes and truncated ONNX, missing model, no model.onnx, no metadata
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
``download`` 9     a zero-byte archive, a truncated zip, a truncated tar.gz, a zip with a
                   corrupt member, an HTML page saved as .zip, a member escaping the target,
                   --to that is a file, too little free disk space; unicode archive and member
                   names (unpacked). Elsewhere: absolute and ``..`` members, tar links
``HTTP API`` 15    zero-byte (multipart and base64), truncated JPEG, HTML, PostScript, LAB
                   TIFF (415); the 5 odd kinds (200, same reading as the twin); unicode and
                   non-UTF-8 multipart file names (200); a zero-byte model, metadata with a
                   repeated charset character or 2 channels (refused at start); and
                   test_api_fuzz: schemathesis from the OpenAPI schema. Elsewhere: text,
                   truncated PNG, bad GIF, bomb, bad parameters, over-limit bodies
============ ===== ==========================================================================

Keras files load in safe mode (a ``Lambda`` layer in model.keras is refused by
``load_best_model`` and ``export``, and in last.keras by ``--resume``, without running it);
configs and ONNX metadata are parsed as data (a ``!!python`` tag or code is never run).
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import io
import json
import os
import re
import shutil
import struct
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays
from PIL import Image

from captcha_ocr.charset import BLANK, Charset, ctc_steps_needed
from captcha_ocr.cli import main
from captcha_ocr.config import ModelSpec, TrainConfig, save_run_config
from captcha_ocr.data import (
    Sample,
    compile_label_pattern,
    label_from_name,
    scan_folder,
    write_samples_csv,
)
from captcha_ocr.decode import greedy_decode, greedy_decode_batch
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.images import ImageLoadError, ImageTooLargeError, load_image
from captcha_ocr.infer import Prediction, Reader
from captcha_ocr.metadata import METADATA_KEY, metadata_from_spec, write_metadata

CHARSET = "abcd1234"  # the charset of conftest's synth_dir
SPEC = ModelSpec("tiny", CHARSET, 32, 100, 1, 5)
STEPS = 25  # the test model's time steps: one per 4 px column of 100
HEIGHT, WIDTH = SPEC.height, SPEC.width
NON_UTF8_NAME = os.fsdecode(b"ab12\xff\xfe.png")  # bytes Linux allows in a name, not UTF-8

# Deterministic property tests: the same examples on every run, no example database written.
PROPERTY = settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- a model without training: a fixed random linear reader in plain ONNX -------------------


def write_model(
    path: Path,
    spec: ModelSpec = SPEC,
    metadata: dict[str, str] | None = None,
    classes: int | None = None,
) -> Path:
    """A tiny ONNX reader ``(N, H, W, C)`` raw pixels -> ``(N, W/4, classes)`` log-probs: a
    fixed random linear map of each 4-pixel column strip (different images read differently).
    Metadata is what ``captcha-ocr export`` writes, unless ``metadata`` replaces it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    h, w, c = spec.height, spec.width, spec.channels
    classes = classes or spec.num_classes
    features = 4 * h * c
    rng = np.random.default_rng(0)
    weights = rng.normal(0.0, 3.0 / np.sqrt(features), (features, classes)).astype(np.float32)
    bias = rng.normal(0.0, 0.5, classes).astype(np.float32)
    nodes = [
        helper.make_node("Mul", ["image", "scale"], ["scaled"]),
        helper.make_node("Transpose", ["scaled"], ["columns"], perm=[0, 2, 1, 3]),  # (N,W,H,C)
        helper.make_node("Reshape", ["columns", "shape"], ["strips"]),  # (N, W/4, 4*H*C)
        helper.make_node("MatMul", ["strips", "weights"], ["projected"]),
        helper.make_node("Add", ["projected", "bias"], ["logits"]),
        helper.make_node("LogSoftmax", ["logits"], ["log_probs"], axis=-1),
    ]
    initializers = [
        numpy_helper.from_array(np.array(1 / 255, np.float32), "scale"),
        numpy_helper.from_array(np.array([-1, w // 4, features], np.int64), "shape"),
        numpy_helper.from_array(weights, "weights"),
        numpy_helper.from_array(bias, "bias"),
    ]
    graph = helper.make_graph(
        nodes,
        "reader",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", h, w, c])],
        [helper.make_tensor_value_info("log_probs", TensorProto.FLOAT, ["batch", w // 4, classes])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    write_metadata(model, metadata_from_spec(spec) if metadata is None else metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(tmp_path_factory.mktemp("model") / "model.onnx")


@pytest.fixture(scope="module")
def reader(model_path: Path) -> Reader:
    return Reader.load(model_path, threads=1)


# --- image factories -------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` with one tiny row of data: a bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def base_picture(seed: int = 0) -> np.ndarray:
    """(32, 100) uint8 grey: dark strokes on pure white (255), so a transparent twin can say
    "white" exactly with alpha 0."""
    rng = np.random.default_rng(seed)
    picture = np.full((HEIGHT, WIDTH), 255, np.uint8)
    for _ in range(6):
        x, y = int(rng.integers(0, WIDTH - 12)), int(rng.integers(0, HEIGHT - 10))
        picture[y : y + 10, x : x + int(rng.integers(3, 12))] = rng.integers(0, 160)
    return picture


def plain_png(picture: np.ndarray) -> bytes:
    return encode(Image.fromarray(picture, "L"), "PNG")


def half(data: bytes) -> bytes:
    return data[: len(data) // 2]


# Files no reader can use: (bytes, file suffix). Each must be a reported skip among good
# files, and a clear error alone.
UNREADABLE: dict[str, Callable[[], tuple[bytes, str]]] = {
    "zero-byte": lambda: (b"", ".png"),
    "truncated PNG": lambda: (half(plain_png(base_picture())), ".png"),
    "truncated JPEG": lambda: (
        half(encode(Image.fromarray(base_picture()).convert("RGB"), "JPEG")),
        ".jpg",
    ),
    "text named .png": lambda: (b"this is not an image\n", ".png"),
    "HTML named .jpg": lambda: (b"<!DOCTYPE html><title>404 Not Found</title>", ".jpg"),
    # PostScript is a program: Pillow would hand it to Ghostscript. It must be refused.
    "PostScript named .png": lambda: (
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 32\nshowpage\n",
        ".png",
    ),
    "decompression bomb": lambda: (png_with_size(100_000, 100_000), ".png"),
    "LAB TIFF": lambda: (encode(Image.new("LAB", (WIDTH, HEIGHT)), "TIFF"), ".tif"),
}


def one_pixel(picture: np.ndarray) -> tuple[bytes, np.ndarray]:
    return encode(Image.new("L", (1, 1), 77), "PNG"), np.full_like(picture, 77)


def sixteen_bit(picture: np.ndarray) -> tuple[bytes, np.ndarray]:
    image = Image.fromarray(picture.astype(np.uint16) * 257)  # 0-255 -> 0-65535
    return encode(image, "PNG"), picture


def palette(picture: np.ndarray) -> tuple[bytes, np.ndarray]:
    image = Image.frombytes("P", (WIDTH, HEIGHT), picture.tobytes())
    image.putpalette(bytes(v for v in range(256) for _ in range(3)))  # index i = grey i
    return encode(image, "PNG"), picture


def transparent(picture: np.ndarray) -> tuple[bytes, np.ndarray]:
    # Black and fully transparent where the picture is white: it must read as white.
    alpha = np.where(picture == 255, 0, 255).astype(np.uint8)
    grey = np.where(alpha == 0, 0, picture).astype(np.uint8)
    rgba = np.dstack([grey, grey, grey, alpha])
    return encode(Image.fromarray(rgba, "RGBA"), "PNG"), picture


def animated_gif(picture: np.ndarray) -> tuple[bytes, np.ndarray]:
    rng = np.random.default_rng(1)
    later = [Image.fromarray(rng.integers(0, 256, picture.shape, np.uint8)) for _ in range(2)]
    buffer = io.BytesIO()
    Image.fromarray(picture, "L").save(
        buffer, "GIF", save_all=True, append_images=later, duration=80, loop=0
    )
    return buffer.getvalue(), picture  # the first frame is the captcha


# Odd but valid images: (encoded file, the plain picture it must read exactly like).
TWINS: dict[str, tuple[Callable[[np.ndarray], tuple[bytes, np.ndarray]], str]] = {
    "1x1": (one_pixel, ".png"),
    "16-bit PNG": (sixteen_bit, ".png"),
    "palette PNG": (palette, ".png"),
    "transparent PNG": (transparent, ".png"),
    "animated GIF": (animated_gif, ".gif"),
}


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def good_images(folder: Path, count: int = 2) -> list[Path]:
    """``count`` plain PNGs named by valid labels of the test charset."""
    labels = ["ab12", "cd34", "a1b2", "c3d4", "abcd", "1234"]
    return [write(folder / f"{labels[i]}.png", plain_png(base_picture(i))) for i in range(count)]


# --- CLI helpers -----------------------------------------------------------------------------


def fails(argv: list[str], capsys: pytest.CaptureFixture, *expected: str) -> str:
    """The command exits 2 with exactly one ``error:`` line holding ``expected``."""
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert status == 2, captured.err[-3000:]
    assert "Traceback" not in captured.err + captured.out, captured.err[-3000:]
    lines = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, captured.err[-3000:]
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def succeeds(argv: list[str], capsys: pytest.CaptureFixture, status: int = 0) -> tuple[str, str]:
    """The command exits ``status`` with no error line and no traceback; (stdout, stderr)."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == status, captured.err[-3000:]
    assert "Traceback" not in captured.err + captured.out, captured.err[-3000:]
    assert not [line for line in captured.err.splitlines() if line.startswith("error:")]
    return captured.out, captured.err


def skipped_count(stderr: str) -> int:
    """The images a command reported as unreadable ("N of M image(s) could not be read")."""
    return sum(int(n) for n in re.findall(r"(\d+) of \d+ image\(s\) could not be read", stderr))


def same_reading(a: Prediction, b: Prediction) -> bool:
    """Equal text and confidence (a batch may sum in another order than a single image)."""
    return a.text == b.text and a.confidence == pytest.approx(b.confidence, rel=1e-5)


# === Reader (Python API) =====================================================================


@pytest.mark.parametrize("kind", UNREADABLE)
def test_reader_refuses_an_unreadable_image_and_skips_it_among_good(
    kind: str, reader: Reader, tmp_path: Path
) -> None:
    data, suffix = UNREADABLE[kind]()
    bad = write(tmp_path / f"bad{suffix}", data)
    error = ImageTooLargeError if kind == "decompression bomb" else ImageLoadError
    with pytest.raises(error, match=re.escape(str(bad))):
        reader.read(bad)
    with pytest.raises(error):
        reader.read(data)
    good = good_images(tmp_path)
    results = reader.read_batch([good[0], bad, good[1]], skip_errors=True)
    assert same_reading(results[0], reader.read(good[0]))
    assert same_reading(results[2], reader.read(good[1]))
    assert results[1].text is None and str(bad) in results[1].error


@pytest.mark.parametrize("kind", TWINS)
def test_reader_reads_odd_images_like_their_plain_twin(
    kind: str, reader: Reader, tmp_path: Path
) -> None:
    make, suffix = TWINS[kind]
    data, twin = make(base_picture(3))
    path = write(tmp_path / f"odd{suffix}", data)
    expected = reader.preprocess(twin)
    np.testing.assert_array_equal(reader.preprocess(path), expected)
    np.testing.assert_array_equal(reader.preprocess(data), expected)
    assert reader.read(path) == reader.read(plain_png(twin))


@pytest.mark.parametrize("name", ["äb12_ü€字.png", NON_UTF8_NAME], ids=["unicode", "non-utf8"])
def test_reader_reads_any_file_name(name: str, reader: Reader, tmp_path: Path) -> None:
    data = plain_png(base_picture(4))
    path = write(tmp_path / name, data)
    assert reader.read(path) == reader.read(data)
    assert reader.read(str(path)) == reader.read(data)


def test_reader_refuses_a_folder_as_an_image(reader: Reader, tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="is a folder"):
        reader.read(tmp_path)


def metadata_with(**changes) -> dict[str, str]:
    """Our ONNX metadata with fields of the JSON spec changed (None: removed)."""
    spec = dataclasses.asdict(SPEC)
    for key, value in changes.items():
        if value is None:
            spec.pop(key)
        else:
            spec[key] = value
    return {**metadata_from_spec(SPEC), METADATA_KEY: json.dumps(spec)}


def _truncated_model(path: Path) -> None:
    data = write_model(path).read_bytes()
    path.write_bytes(data[: len(data) // 2])


# name -> (make the file at the given path, words the error must hold)
BAD_MODELS: dict[str, tuple[Callable[[Path], object], tuple[str, ...]]] = {
    "zero-byte ONNX": (lambda p: p.write_bytes(b""), ("not a readable ONNX model",)),
    "truncated ONNX": (_truncated_model, ("not a readable ONNX model",)),
    "text named .onnx": (lambda p: p.write_text("hello"), ("not a readable ONNX model",)),
    "no metadata": (lambda p: write_model(p, metadata={}), ("no captcha-ocr metadata", "export")),
    "metadata not JSON": (
        lambda p: write_model(p, metadata={METADATA_KEY: "{'charset': 'abc'"}),
        ("not valid JSON", "export"),
    ),
    "metadata a JSON list": (
        lambda p: write_model(p, metadata={METADATA_KEY: "[1, 2, 3]"}),
        ("bad captcha-ocr metadata", "export"),
    ),
    "metadata missing a key": (
        lambda p: write_model(p, metadata=metadata_with(width=None)),
        ("width", "export"),
    ),
    "metadata with an unknown key": (
        lambda p: write_model(p, metadata=metadata_with(colour="red")),
        ("metadata.colour", "export"),
    ),
    "metadata of a wrong type": (
        lambda p: write_model(p, metadata=metadata_with(height="32")),
        ("metadata.height", "export"),
    ),
    "metadata charset repeats a char": (
        lambda p: write_model(p, metadata=metadata_with(charset="abcd1234a")),
        ("repeats a character", "export"),
    ),
    "metadata charset empty": (
        lambda p: write_model(p, metadata=metadata_with(charset="")),
        ("charset is empty", "export"),
    ),
    "metadata blank index 1": (
        lambda p: write_model(p, metadata=metadata_with(blank_index=1)),
        ("blank_index 1", "export"),
    ),
    "metadata 2 channels": (
        lambda p: write_model(p, metadata=metadata_with(channels=2)),
        ("inconsistent", "export"),
    ),
    "metadata sizes disagree with the input": (
        lambda p: write_model(p, metadata=metadata_with(height=40)),
        ("does not match its metadata", "export"),
    ),
    "metadata charset disagrees with the output": (
        lambda p: write_model(p, metadata=metadata_with(charset="abc")),
        ("does not match the 4 classes", "export"),
    ),
}


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
    model_path: Path, tmp_path: Path
) -> None:
    # The ONNX file describes itself: reading never depends on configs.yaml.
    run = tmp_path / "run"
    shutil.copytree(model_path.parent, run)
    image = plain_png(base_picture(5))
    expected = Reader.load(model_path).read(image)
    assert same_reading(Reader.load(run).read(image), expected)
    (run / "configs.yaml").write_bytes(b"model: !!python/object:os.system [oops\n\xff")
    assert same_reading(Reader.load(run).read(image), expected)


def test_reader_refuses_allowed_chars_outside_the_charset_and_batch_size_0(
    reader: Reader,
) -> None:
    image = plain_png(base_picture(1))
    with pytest.raises(CaptchaOCRError, match="cannot output: 'xz'"):
        reader.read(image, allowed_chars="axz")
    with pytest.raises(CaptchaOCRError, match="batch_size must be >= 1"):
        reader.read_batch([image], batch_size=0)


# === predict (CLI) ===========================================================================


@pytest.mark.parametrize("kind", UNREADABLE)
def test_predict_skips_and_reports_one_unreadable_image_among_good(
    kind: str, model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    good = good_images(tmp_path / "images")
    data, suffix = UNREADABLE[kind]()
    bad = write(tmp_path / "images" / f"bad{suffix}", data)
    out, err = succeeds(["predict", model_path, tmp_path / "images"], capsys, status=1)
    assert sorted(line.split("\t")[0] for line in out.splitlines()) == sorted(map(str, good))
    assert f"skipped {bad}" in err and skipped_count(err) == 1


def test_predict_alone_or_only_unreadable_is_an_error(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "bad"
    for i, kind in enumerate(UNREADABLE):
        data, suffix = UNREADABLE[kind]()
        write(folder / f"bad{i}{suffix}", data)
    fails(["predict", model_path, folder], capsys, f"none of the {len(UNREADABLE)} images")
    alone = folder / "bad0.png"
    fails(["predict", model_path, alone], capsys, str(alone), "check that the files are images")


def test_predict_empty_folder_and_missing_path(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "empty").mkdir()
    fails(["predict", model_path, tmp_path / "empty"], capsys, "no images found")
    fails(["predict", model_path, tmp_path / "nope.png"], capsys, "does not exist")


def test_predict_reads_odd_images_like_their_plain_twins(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    expected = {}
    for i, (kind, (make, suffix)) in enumerate(TWINS.items()):
        data, twin = make(base_picture(10 + i))
        path = write(tmp_path / "odd" / f"odd{i}{suffix}", data)
        write(tmp_path / "twins" / f"odd{i}.png", plain_png(twin))
        expected[path.stem] = kind
    odd, _ = succeeds(["predict", model_path, tmp_path / "odd"], capsys)
    twins, _ = succeeds(["predict", model_path, tmp_path / "twins"], capsys)

    def readings(out: str) -> dict[str, list[str]]:
        rows = [line.split("\t") for line in out.splitlines()]
        return {Path(path).stem: rest for path, *rest in rows}

    assert readings(odd) == readings(twins)
    assert set(readings(odd)) == set(expected)


def test_predict_prints_unicode_and_non_utf8_file_names(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = plain_png(base_picture(6))
    write(tmp_path / "names" / "äb12_€字.png", data)
    write(tmp_path / "names" / NON_UTF8_NAME, data)
    out, _ = succeeds(["predict", model_path, tmp_path / "names"], capsys)
    lines = out.splitlines()
    assert len(lines) == 2 and "äb12_€字.png" in out and "ab12\\udcff\\udcfe.png" in out
    assert len({line.split("\t", 1)[1] for line in lines}) == 1  # same picture, same reading
    out, _ = succeeds(["predict", model_path, tmp_path / "names", "--json"], capsys)
    rows = [json.loads(line) for line in out.splitlines()]
    assert {Path(row["path"]).name for row in rows} == {"äb12_€字.png", NON_UTF8_NAME}


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("zero-byte ONNX", ("not a readable ONNX model",)),
        ("metadata charset repeats a char", ("repeats a character", "export")),
        ("metadata sizes disagree with the input", ("does not match its metadata", "export")),
    ],
)
def test_predict_refuses_a_bad_model(
    kind: str, words: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    BAD_MODELS[kind][0](tmp_path / "model.onnx")
    image = good_images(tmp_path / "images", 1)[0]
    fails(["predict", tmp_path / "model.onnx", image], capsys, *words)


def test_predict_allowed_chars_outside_the_charset(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    image = good_images(tmp_path, 1)[0]
    fails(["predict", model_path, image, "--allowed-chars", "ab?"], capsys, "'?'", CHARSET)


def test_predict_run_folder_without_or_with_a_garbage_configs_yaml(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    shutil.copytree(model_path.parent, run)
    image = good_images(tmp_path / "images", 1)[0]
    before, _ = succeeds(["predict", run, image], capsys)
    (run / "configs.yaml").write_text("model: [unclosed\n")
    after, _ = succeeds(["predict", run, image], capsys)
    assert before == after and before.count("\t") == 2


# === evaluate (CLI) ==========================================================================


@pytest.mark.parametrize("kind", UNREADABLE)
def test_evaluate_counts_and_reports_one_unreadable_image_among_good(
    kind: str, model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    good_images(tmp_path / "data", 3)
    data, suffix = UNREADABLE[kind]()
    write(tmp_path / "data" / f"ab1{suffix}", data)
    report = tmp_path / "report.json"
    out, err = succeeds(["evaluate", model_path, tmp_path / "data", "--report", report], capsys)
    assert skipped_count(err) == 1 and "images 4" in out
    assert json.loads(report.read_text())["unreadable"] == 1


def test_evaluate_reads_odd_images(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    for i, (make, suffix) in enumerate(TWINS.values()):
        write(tmp_path / "data" / f"ab1_{i}{suffix}", make(base_picture(i))[0])
    report = tmp_path / "report.json"
    out, err = succeeds(["evaluate", model_path, tmp_path / "data", "--report", report], capsys)
    assert skipped_count(err) == 0 and f"images {len(TWINS)}" in out
    assert json.loads(report.read_text())["unreadable"] == 0


def test_evaluate_unicode_paths_in_a_labels_csv_and_duplicate_labels(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = plain_png(base_picture(7))
    write(tmp_path / "données" / "äb字.png", data)
    write(tmp_path / "données" / "copy.png", data)
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\ndonnées/äb字.png,ab12\ndonnées/copy.png,ab12\n", "utf-8")
    report = tmp_path / "rapport.json"
    out, _ = succeeds(["evaluate", model_path, labels, "--report", report], capsys)
    assert "images 2" in out
    results = json.loads(report.read_text(encoding="utf-8"))["results"]
    assert [Path(r["path"]).name for r in results] == ["äb字.png", "copy.png"]
    assert results[0]["prediction"] == results[1]["prediction"]


def test_evaluate_skips_and_reports_non_utf8_file_names(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    write(tmp_path / "data" / NON_UTF8_NAME, plain_png(base_picture(1)))
    fails(["evaluate", model_path, tmp_path / "data"], capsys, "not valid UTF-8", "rename")
    good_images(tmp_path / "data", 2)
    out, err = succeeds(["evaluate", model_path, tmp_path / "data"], capsys)
    assert "images 2" in out
    assert "1 image(s) have a file name that is not valid UTF-8" in err
    assert "ab12\\xff\\xfe.png" in err


@pytest.mark.parametrize(
    ("names", "words"),
    [
        (["ab 12.png"], ("cannot output (' ')",)),  # a space
        (["ab12.png", "abé.png"], ("cannot output ('é')", "--ignore-case")),
        (["abcd1234abcd1234abcd1234ab.png"], ("longer than the model can output", "26")),
    ],
    ids=["space", "outside-charset", "too-long"],
)
def test_evaluate_refuses_labels_the_model_can_never_output(
    names: list[str],
    words: tuple[str, ...],
    model_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    for name in names:
        write(tmp_path / "data" / name, plain_png(base_picture()))
    fails(["evaluate", model_path, tmp_path / "data"], capsys, *words)


def test_evaluate_only_unreadable_empty_folder_bad_csv_and_model(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    for i, kind in enumerate(UNREADABLE):
        data, suffix = UNREADABLE[kind]()
        write(tmp_path / "bad" / f"ab1_{i}{suffix}", data)
    fails(["evaluate", model_path, tmp_path / "bad"], capsys, "none of the 8 image(s)")
    (tmp_path / "empty").mkdir()
    fails(["evaluate", model_path, tmp_path / "empty"], capsys, "no images found")
    latin1 = tmp_path / "labels.csv"
    latin1.write_bytes("path,label\ndonnées.png,ab12\n".encode("latin-1"))
    fails(["evaluate", model_path, latin1], capsys, "not UTF-8", "save the labels file as UTF-8")
    BAD_MODELS["truncated ONNX"][0](tmp_path / "cut.onnx")
    good_images(tmp_path / "good", 1)
    fails(["evaluate", tmp_path / "cut.onnx", tmp_path / "good"], capsys, "cut.onnx")


# === HTTP API ================================================================================


@pytest.fixture(scope="module")
def client(reader: Reader):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from captcha_ocr.serve import ServeSettings, create_app

    with TestClient(create_app(reader, ServeSettings(batch_wait_ms=0))) as test_client:
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


# === download (CLI) ==========================================================================


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def tar_gz_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _noise(n: int) -> bytes:
    return np.random.default_rng(0).integers(0, 256, n, np.uint8).tobytes()


def _corrupt_member(data: bytes) -> bytes:
    damaged = bytearray(data)
    damaged[len(damaged) // 6] ^= 0xFF  # inside the first member's compressed bytes
    return bytes(damaged)


MEMBERS = {f"captchas/ab{i}.png": _noise(50_000) for i in range(3)}

# name of the archive file -> (its bytes, words the error must hold)
BAD_ARCHIVES: dict[str, tuple[Callable[[], bytes], tuple[str, ...]]] = {
    "empty.zip": (lambda: b"", ("is empty", "check the URL")),
    "cut.zip": (lambda: zip_bytes(MEMBERS)[:60_000], ("not a zip or tar", "check the URL")),
    "cut.tar.gz": (lambda: tar_gz_bytes(MEMBERS)[:60_000], ("download it again",)),
    "crc.zip": (lambda: _corrupt_member(zip_bytes(MEMBERS)), ("damaged", "download it again")),
    "page.zip": (lambda: b"<!DOCTYPE html><h1>Not Found</h1>", ("not a zip or tar",)),
    "escape.zip": (
        lambda: zip_bytes({"captchas/ab1.png": b"ok", "../../evil.png": b"evil"}),
        ("outside", "refusing"),
    ),
}


@pytest.mark.parametrize("name", BAD_ARCHIVES)
def test_download_refuses_a_bad_archive(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    make, words = BAD_ARCHIVES[name]
    source = write(tmp_path / "served" / name, make())
    out = tmp_path / "deep" / "Datasets"
    fails(["download", source.as_uri(), "--to", out], capsys, *words)
    assert not (tmp_path / "evil.png").exists() and not (tmp_path / "deep" / "evil.png").exists()
    # Never half a file: whatever was unpacked is whole.
    for path in out.rglob("*.png"):
        assert path.read_bytes() == MEMBERS[path.relative_to(out).as_posix()]
    # Nothing marks it done, so the next try fetches or extracts again.
    assert not list(out.glob(".captcha-ocr-extracted*"))


def test_download_to_a_file_or_a_full_disk(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from captcha_ocr import download as download_module

    source = write(tmp_path / "captchas.zip", zip_bytes(MEMBERS))
    blocker = write(tmp_path / "file", b"not a folder")
    fails(["download", source.as_uri(), "--to", blocker], capsys, "is a file", "choose a folder")
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(download_module.shutil, "disk_usage", lambda _: usage(10**9, 0, 1000))
    out = tmp_path / "Datasets"
    fails(["download", source.as_uri(), "--to", out], capsys, "only 0.0 MB", "free some space")
    assert not [p for p in out.rglob("*.png")]


def test_download_unicode_archive_and_member_names(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    members = {"données/äb字.png": b"one", "données/sub/ü.png": b"two"}
    source = write(tmp_path / "captchas é.zip", zip_bytes(members))
    out = tmp_path / "Datasets"
    succeeds(["download", source.as_uri(), "--to", out], capsys)
    assert (out / "données" / "äb字.png").read_bytes() == b"one"
    assert (out / "données" / "sub" / "ü.png").read_bytes() == b"two"


# === train (CLI) =============================================================================


def copy_synth(synth_dir: Path, folder: Path, count: int = 40) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(p, folder)) for p in sorted(synth_dir.glob("*.png"))[:count]]


def train_argv(data: Path, out: Path, *extra: str) -> list:
    return ["train", data, "--out", out, "--preset", "tiny", "--epochs", "1", "--quiet", *extra]


@pytest.mark.slow
def test_train_skips_and_reports_bad_files_among_good_and_uses_odd_ones(
    synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = tmp_path / "data"
    good = copy_synth(synth_dir, data)
    label = good[0].stem.split("_")[0]
    picture = np.asarray(Image.open(good[0]).convert("L"))
    for i, kind in enumerate(UNREADABLE):
        bytes_, suffix = UNREADABLE[kind]()
        write(data / f"{label}_{100 + i}{suffix}", bytes_)
    odd = [
        write(data / f"{label}_{200 + i}{suffix}", make(picture)[0])
        for i, (make, suffix) in enumerate(TWINS.values())
    ]
    other = good[1].stem.split("_")[0]
    odd.append(Path(shutil.copy(good[1], data / f"ä{other}.png")))  # unicode name
    odd.append(Path(shutil.copy(good[1], data / f"{other}_300.png")))  # duplicate label
    odd.append(Path(shutil.copy(good[2], data / "ab 12.png")))  # a space
    write(data / NON_UTF8_NAME, good[3].read_bytes())

    _, err = succeeds(train_argv(data, tmp_path / "runs", "--seed", "1"), capsys)
    training = err.split("exporting the best model")[0]  # export reports the val ones again
    assert skipped_count(training) == len(UNREADABLE), err[-3000:]
    assert "not valid UTF-8 and were skipped" in err and "contain spaces" in err
    run = (tmp_path / "runs" / "latest").resolve()
    used = {
        Path(row.split(",")[0]).name
        for name in ("train.csv", "val.csv")
        for row in (run / name).read_text(encoding="utf-8").splitlines()[1:]
    }
    assert {p.name for p in odd} <= used and NON_UTF8_NAME not in used
    reader = Reader.load(run)
    assert "ä" in reader.spec.charset and " " in reader.spec.charset
    assert isinstance(reader.read(odd[0]), Prediction)


@pytest.mark.slow
def test_train_refuses_a_folder_of_only_unreadable_files(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    no_header = tmp_path / "no_header"
    for i, data in enumerate([b"", b"hello", b"<html>"]):
        write(no_header / f"ab{i}.png", data)
    runs = tmp_path / "runs"
    fails(train_argv(no_header, runs), capsys, "none of the images could be read", "are images")
    truncated = tmp_path / "truncated"
    for i, kind in enumerate(["truncated PNG", "truncated JPEG", "LAB TIFF"]):
        data, suffix = UNREADABLE[kind]()
        write(truncated / f"ab{i}{suffix}", data)
    write(truncated / "ab9.png", b"")
    fails(train_argv(truncated, runs), capsys, "none of the", "could be read", "are images")
    assert not list(runs.rglob("*.keras")) and not list(runs.rglob("*.onnx"))


@pytest.mark.slow
def test_train_refuses_before_training(
    synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = tmp_path / "data"
    good = copy_synth(synth_dir, data)
    runs = tmp_path / "runs"
    # 26 characters need 26 CTC steps; the tiny preset at width 100 has 25.
    long_label = write(data / "abcd1234abcd1234abcd1234ab.png", good[0].read_bytes())
    fails(train_argv(data, runs), capsys, "needs 26 CTC steps", "gives 25", "--width")
    assert not runs.exists() or not list(runs.iterdir())
    long_label.unlink()

    write(data / "ab1_99.png", b"")
    fails(train_argv(data, runs, "--strict"), capsys, "could not be read", "drop --strict")
    assert not list(runs.rglob("*.keras"))

    only_bad_names = tmp_path / "names"
    write(only_bad_names / NON_UTF8_NAME, b"")
    fails(train_argv(only_bad_names, runs), capsys, "not valid UTF-8", "rename")

    latin1 = tmp_path / "labels.csv"
    latin1.write_bytes("path,label\ndonnées.png,ab12\n".encode("latin-1"))
    fails(train_argv(latin1, runs), capsys, "not UTF-8")


@pytest.mark.slow
def test_train_detects_a_full_disk_or_an_unwritable_run_folder_first(
    synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from captcha_ocr import runfolder

    data = tmp_path / "data"
    copy_synth(synth_dir, data)
    blocker = write(tmp_path / "file", b"not a folder")
    fails(train_argv(data, blocker), capsys, "cannot write to", "choose another --out")
    fails(train_argv(data, blocker / "runs"), capsys, "cannot write to", "choose another --out")

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(runfolder.shutil, "disk_usage", lambda _: usage(10**9, 0, 2_000_000))
    runs = tmp_path / "runs"
    fails(train_argv(data, runs), capsys, "only 2 MB free", "free some space")
    assert list(runs.iterdir()) == []  # no run folder, no file written


def fake_run(folder: Path, synth_dir: Path, **train_changes) -> Path:
    """A run folder as training leaves it, without the training: configs, split, state."""
    samples = [Sample(str(p), p.stem.split("_")[0]) for p in sorted(synth_dir.glob("*.png"))]
    config = dataclasses.replace(TrainConfig(preset="tiny", epochs=3), **train_changes)
    spec = ModelSpec("tiny", CHARSET, 32, 100, 1, max(len(s.label) for s in samples))
    save_run_config(folder, spec, config, {"source": str(synth_dir)})
    write_samples_csv(folder / "train.csv", samples[:24])
    write_samples_csv(folder / "val.csv", samples[24:32])
    write(folder / "last.keras", b"PK\x03\x04 not really a keras file")
    return folder


def _edit(run: Path, transform: Callable[[str], str]) -> None:
    path = run / "configs.yaml"
    path.write_text(transform(path.read_text(encoding="utf-8")), encoding="utf-8")


# name -> (edit the run folder, words the error must hold)
EDITED_RUNS: dict[str, tuple[Callable[[Path], object], tuple[str, ...]]] = {
    "configs.yaml missing": (lambda r: (r / "configs.yaml").unlink(), ("configs.yaml is missing",)),
    "!!python tag": (
        lambda r: (r / "configs.yaml").write_text(
            f'model: !!python/object/apply:os.system ["touch {r / "ran"}"]\ntrain: {{}}\n'
        ),
        ("not valid YAML",),
    ),
    "unknown key": (
        lambda r: _edit(r, lambda t: t.replace("train:\n", "train:\n  learnin_rate: 0.1\n")),
        ("train.learnin_rate", "edited by hand"),
    ),
    "wrong type": (
        lambda r: _edit(r, lambda t: re.sub(r"batch_size: \d+", "batch_size: big", t)),
        ("train.batch_size", "must be int"),
    ),
    "impossible value": (
        lambda r: _edit(r, lambda t: re.sub(r"batch_size: \d+", "batch_size: 0", t)),
        ("batch_size must be >= 1", "edited by hand"),
    ),
    "charset repeats a char": (
        lambda r: _edit(r, lambda t: t.replace(f"charset: {CHARSET}", "charset: abcd1234a")),
        ("repeats a character", "edited by hand"),
    ),
    "3 -> 2 channels": (
        lambda r: _edit(r, lambda t: t.replace("channels: 1", "channels: 2", 1)),
        ("channels must be 1 or 3",),
    ),
    "not a mapping": (
        lambda r: (r / "configs.yaml").write_text("- model\n- train\n"),
        ("mapping",),
    ),
    "not UTF-8": (
        lambda r: (r / "configs.yaml").write_bytes(b"model: \xff\xfe\n"),
        ("not valid YAML",),
    ),
    "empty": (lambda r: (r / "configs.yaml").write_text(""), ("no 'model' section",)),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", EDITED_RUNS)
def test_train_resume_refuses_an_edited_run_folder(
    kind: str, synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = fake_run(tmp_path / "run", synth_dir)
    edit, words = EDITED_RUNS[kind]
    edit(run)
    fails(["train", "--resume", run, "--quiet"], capsys, *words)
    assert not (run / "ran").exists() and not (run / "model.keras").exists()


def lambda_model(marker: Path):
    """A Keras model whose Lambda layer touches ``marker`` whenever it is run or rebuilt."""
    import keras

    touch = eval(f"lambda x: (__import__('pathlib').Path({str(marker)!r}).touch(), x)[1]")
    inputs = keras.Input((HEIGHT, WIDTH, 1))
    outputs = keras.layers.Reshape((STEPS, 4 * HEIGHT))(keras.layers.Lambda(touch)(inputs))
    return keras.Model(inputs, keras.layers.Dense(SPEC.num_classes)(outputs))


@pytest.mark.slow
def test_keras_files_load_in_safe_mode_only(
    synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from captcha_ocr.model import load_best_model

    marker = tmp_path / "ran"
    run = fake_run(tmp_path / "run", synth_dir)
    model = lambda_model(marker)
    model.save(run / "model.keras")
    model.save(run / "code.keras")
    assert marker.exists()  # building the model ran the code; loading it must not
    marker.unlink()
    with pytest.raises(CaptchaOCRError, match="holds Python code") as info:
        load_best_model(run)
    assert "\n" not in str(info.value)
    fails(["export", run], capsys, "holds Python code")
    shutil.copy(run / "code.keras", run / "last.keras")
    fails(["train", "--resume", run, "--quiet"], capsys, "last.keras", "holds Python code")
    assert not marker.exists()


@pytest.mark.slow
def test_train_resume_refuses_a_damaged_checkpoint_or_state(
    synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = fake_run(tmp_path / "run", synth_dir)
    fails(["train", "--resume", run, "--quiet"], capsys, "last.keras cannot be loaded")
    (run / "state.json").write_text('{"epochs_done": "two"}')
    fails(["train", "--resume", run, "--quiet"], capsys, "state.json is damaged")
    (run / "state.json").write_text("[1, 2")
    fails(["train", "--resume", run, "--quiet"], capsys, "state.json is damaged")


# === property tests ==========================================================================

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
