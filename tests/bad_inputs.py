"""The bad inputs that the test_robust_* modules feed to each entry point (train, evaluate,
predict, Reader, download, HTTP API), made on the fly as bytes or files.

A right answer is one of: a one-line ``error: ...`` that says what to do and a non-zero exit
(CLI), a :class:`CaptchaOCRError` with a helpful message (Python API), a 4xx with the JSON
error shape (HTTP), or, for one bad file among good ones, a reported skip (a warning with the
count, or a ``Prediction`` with ``error``); never a traceback, a hang or a wrong reading. Odd
but valid images must read exactly like their plain twin.

"The 8 unreadable kinds" (:data:`UNREADABLE`) are: a zero-byte file, a truncated PNG, a
truncated JPEG, text named .png, HTML named .jpg, PostScript named .png (a program: never
handed to Ghostscript), a decompression bomb (100,000 x 100,000 in its header) and a LAB TIFF
(a mode Pillow cannot convert). "The 5 odd kinds" (:data:`TWINS`) are: 1x1, 16-bit PNG,
palette PNG, transparent PNG, animated GIF. :data:`BAD_MODELS` are the ONNX files a reader
must refuse. Each test module's docstring lists what it covers; "elsewhere" there means
test_cli_errors, test_train, test_download, test_serve or test_config.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from captcha_ocr.metadata import METADATA_KEY, metadata_from_spec
from tests.helpers import SPEC, encode, png_with_size, write, write_model

HEIGHT, WIDTH = SPEC.height, SPEC.width
NON_UTF8_NAME = os.fsdecode(b"ab12\xff\xfe.png")  # bytes Linux allows in a name, not UTF-8


# --- images ----------------------------------------------------------------------------------


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


def good_images(folder: Path, count: int = 2) -> list[Path]:
    """``count`` plain PNGs named by valid labels of the test charset."""
    labels = ["ab12", "cd34", "a1b2", "c3d4", "abcd", "1234"]
    return [write(folder / f"{labels[i]}.png", plain_png(base_picture(i))) for i in range(count)]


# --- models ----------------------------------------------------------------------------------


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
