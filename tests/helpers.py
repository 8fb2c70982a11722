"""Helpers the test modules share: the CLI checks (``fails``, ``succeeds``), a fixed random ONNX
reader made without training (``write_model``), image bytes (``encode``, the header bomb
``png_with_size``) and the check that a fresh interpreter imports no Keras or TensorFlow.

Keras-free at import (``onnx`` only inside ``write_model``), so the serve tests can use it where
only the ``[serve]`` extra is installed (tests/serve_extra_only.py).
"""

from __future__ import annotations

import csv
import io
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captcha_ocr.cli import main
from captcha_ocr.config import ModelSpec
from captcha_ocr.infer import Prediction
from captcha_ocr.metadata import metadata_from_spec, write_metadata
from tests import tiny_reader

# The spec of write_model's reader (and of tests/tiny_reader.py's): conftest's synth charset,
# 100x32 grey, labels up to 5 characters.
SPEC = tiny_reader.SPEC
CHARSET = SPEC.charset
STEPS = tiny_reader.STEPS  # the time steps: one per 4 px column

# --- the command line ------------------------------------------------------------------------


def fails(argv: list, capsys: pytest.CaptureFixture, *expected: str) -> str:
    """The command exits 2 with exactly one ``error:`` line holding ``expected``, and no
    traceback; returns that line."""
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert status == 2, captured.err[-3000:]
    assert "Traceback" not in captured.err + captured.out, captured.err[-3000:]
    lines = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, captured.err[-3000:]
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def succeeds(argv: list, capsys: pytest.CaptureFixture, status: int = 0) -> tuple[str, str]:
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


# --- files and image bytes -------------------------------------------------------------------


def write(path: Path, data: bytes) -> Path:
    """``data`` written at ``path``, its folders made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def encode(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    """``image`` as the bytes of a ``fmt`` file."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` but whose pixel data is one tiny row:
    a decompression bomb, refused from its header (a decoded one reads as truncated)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


# --- import floors ---------------------------------------------------------------------------


def assert_runs_without(packages: tuple[str, ...], code: str, timeout: float = 120) -> str:
    """Runs ``code`` in a fresh interpreter, which must succeed without ever importing any of
    ``packages`` (e.g. ``("tensorflow", "keras")``); returns its stdout."""
    check = (
        "\nimport sys\n"
        f"heavy = [m for m in sys.modules if m.split('.')[0] in {tuple(packages)!r}]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code + check], capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def wrong_label(label: str) -> str:
    """``label`` with its first character replaced by another of the synthetic charset."""
    from tests.conftest import SYNTH_CHARSET

    return next(c for c in SYNTH_CHARSET if c != label[0]) + label[1:]


def write_labels_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    """A ``path,label`` CSV of ``rows``."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    return path


def base_model_run(run: Path, train_rows, val_rows, usable: bool = True, source=None) -> Path:
    """A run folder around the shipped base model (no training): its ``model.onnx``, a
    verdict (and ``source``, the data it says it trained on), and ``train.csv``/``val.csv``
    of the ``(path, label)`` rows given."""
    import shutil

    from captcha_ocr.basemodel import BASE_DIR
    from captcha_ocr.runfolder import CONFIG_FILE, ONNX_FILE, TRAIN_CSV, VAL_CSV

    run.mkdir(parents=True, exist_ok=True)
    shutil.copy(BASE_DIR / ONNX_FILE, run / ONNX_FILE)
    verdict = f"verdict: {{usable: {str(usable).lower()}, reason: ''}}\n"
    (run / CONFIG_FILE).write_text(verdict + (f"data: {{source: '{source}'}}\n" if source else ""))
    write_labels_csv(run / TRAIN_CSV, train_rows)
    write_labels_csv(run / VAL_CSV, val_rows)
    return run
