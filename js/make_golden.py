"""Write js/golden/: what the Python reader reads, for the JavaScript reader's tests to match.

The golden set is two small random-weight readers (``grey.onnx``, 1 channel, and ``rgb.onnx``,
3 channels, made by ``tests.helpers.write_model``: every output depends on every pixel), a copy
of ``tests/tiny_reader.onnx`` (it reads the texts it draws, with high confidence), ``real.onnx``
(a real Keras export: ``captcha-ocr train --preset tiny --epochs 3`` on 300 synthesized
120x40 captchas of ``abcd1234``, exported once and kept, as rebuilding it needs TensorFlow), images
of many kinds (PNG in every mode, JPEG, GIF, WebP; sizes other than the models'), and
``golden.json``: for each (model, image) the Python reader's model input, text, confidence and
per-step probabilities, plus preprocessing-only checks (resizes to many sizes; every alpha over
every level; every RGB colour to grey). ``node --test js/test/`` checks the JS reader against
it; ``tests/test_js_reader.py`` checks that the current Python reader still gives it.

Run from the repository root (needs the ``onnx`` package, in the ``[train]`` extra):

    PYTHONPATH=src python js/make_golden.py
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().with_name("golden")
JSON_FILE = "golden.json"
# Probabilities are written with this many decimals: far below the 1e-4 the JS test allows.
DECIMALS = 5

# Each (model, image) pair is read; these pairs are also read with allowed characters.
ALLOWED = {"grey": "2345bcd", "rgb": "AΩ😀x", "tiny": "ab12", "real": "ab12"}
# tests/tiny_reader.onnx, copied: a reader that reads texts it draws with high confidence.
TINY_TEXTS = ("ab12", "4d4d", "c")
# Preprocessing-only checks: a small image resized to each of these (width, height).
RESIZE_SOURCES = {"resize_l.png": 1, "resize_rgb.png": 3}  # image: the channels it is read in
RESIZE_TARGETS = (
    (1, 1), (2, 3), (13, 7), (36, 23), (37, 50), (45, 29), (100, 32), (200, 11), (5, 60), (37, 23)
)  # fmt: skip


def model_specs():
    """The two golden readers' specs: grey with the default charset; RGB with characters
    outside ASCII and outside the BMP (the JS reader must index code points, not UTF-16)."""
    from captcha_ocr.charset import DEFAULT_CHARSET
    from captcha_ocr.config import ModelSpec

    return {
        "grey": ModelSpec("golden", DEFAULT_CHARSET, 32, 100, 1, 6),
        "rgb": ModelSpec("golden", "AB7xyzΩ€😀", 40, 120, 3, 6),
    }


def _texture(rng: np.random.Generator, height: int, width: int, channels: int) -> np.ndarray:
    """``(height, width, channels)`` uint8: smooth noise with dark strokes, captcha-like."""
    small = rng.integers(0, 256, (max(2, height // 6), max(2, width // 6), channels), np.uint8)
    mode = "L" if channels == 1 else "RGB"
    base = Image.fromarray(small[..., 0] if channels == 1 else small, mode)
    image = base.resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = int(rng.integers(0, width)), int(rng.integers(0, height))
        colour = tuple(int(v) for v in rng.integers(0, 90, channels))
        draw.line((x0, y0, x1, y1), fill=colour[0] if channels == 1 else colour, width=2)
    array = np.asarray(image).astype(np.int16).reshape(height, width, channels)
    noise = rng.integers(-12, 13, array.shape)
    return np.clip(array + noise, 0, 255).astype(np.uint8)


def make_images(folder: Path) -> None:
    """The golden images, one of each kind the reader meets (seeded, so always the same)."""
    rng = np.random.default_rng(14)
    folder.mkdir(parents=True, exist_ok=True)

    def save(name: str, image: Image.Image, **params) -> None:
        buffer = io.BytesIO()
        image.save(buffer, **params, format=Image.registered_extensions()[Path(name).suffix])
        (folder / name).write_bytes(buffer.getvalue())

    rgb = _texture(rng, 50, 200, 3)
    save("rgb_200x50.png", Image.fromarray(rgb))  # the common captcha size: a 2-D downscale
    save("l_100x32.png", Image.fromarray(_texture(rng, 32, 100, 1)[..., 0]))  # grey's own size
    rgba = np.dstack([_texture(rng, 60, 160, 3), np.tile(np.linspace(0, 255, 160), (60, 1))])
    rgba[::7, ::5, 3] = 0  # fully transparent specks
    rgba[1::9, :, 3] = 255
    save("rgba_160x60.png", Image.fromarray(rgba.astype(np.uint8), "RGBA"))
    palette = Image.fromarray(_texture(rng, 30, 90, 3)).quantize(40, dither=Image.Dither.NONE)
    save("p_trns_90x30.png", palette, transparency=3)
    la = np.dstack([_texture(rng, 40, 150, 1)[..., 0], rng.integers(0, 256, (40, 150))])
    save("la_150x40.png", Image.fromarray(la.astype(np.uint8), "LA"))
    save("rgb_420.jpg", Image.fromarray(_texture(rng, 70, 200, 3)), quality=75)
    save("rgb_444.jpg", Image.fromarray(_texture(rng, 45, 130, 3)), quality=92, subsampling=0)
    save("l.jpg", Image.fromarray(_texture(rng, 45, 120, 1)[..., 0]), quality=80)
    grey_key = _texture(rng, 32, 100, 1)[..., 0]
    save("l_colour_key_100x32.png", Image.fromarray(grey_key), transparency=int(grey_key[5, 5]))
    rgb_key = _texture(rng, 36, 110, 3)
    save("rgb_colour_key.png", Image.fromarray(rgb_key), transparency=tuple(rgb_key[3, 3].tolist()))
    save("bits_130x35.png", Image.fromarray(_texture(rng, 35, 130, 1)[..., 0] > 128))
    grey16 = _texture(rng, 33, 101, 1)[..., 0].astype(np.uint16) * 257 + rng.integers(0, 257)
    save("i16_101x33.png", Image.fromarray(grey16.astype(np.uint16)))
    save("wide_140x32.png", Image.fromarray(_texture(rng, 32, 140, 3)))  # grey: width only
    save("tall_100x57.png", Image.fromarray(_texture(rng, 57, 100, 3)))  # grey: height only
    save("tiny_7x5.png", Image.fromarray(_texture(rng, 5, 7, 3)))  # an upscale
    gif = Image.fromarray(_texture(rng, 36, 110, 3)).quantize(64, dither=Image.Dither.NONE)
    save("p_trns.gif", gif, transparency=0)
    save("rgb_lossless.webp", Image.fromarray(_texture(rng, 48, 150, 3)), lossless=True)
    sys.path.insert(0, str(ROOT))
    from tests import tiny_reader

    for text in TINY_TEXTS:  # drawn for the tiny reader, as L, RGB and a bigger RGB JPEG
        drawn = tiny_reader.draw(text)[..., 0]
        save(f"tiny_{text}.png", Image.fromarray(drawn))
    coloured = np.dstack([drawn, np.clip(drawn.astype(int) + 20, 0, 255), drawn]).astype(np.uint8)
    save("tiny_rgb.png", Image.fromarray(coloured))
    big = Image.fromarray(coloured).resize((250, 80), Image.Resampling.NEAREST)
    save("tiny_big.jpg", big, quality=95)
    save("resize_l.png", Image.fromarray(_texture(rng, 23, 37, 1)[..., 0]))
    save("resize_rgb.png", Image.fromarray(_texture(rng, 23, 37, 3)))


def build_models(folder: Path) -> None:
    """The two random-weight readers (needs ``onnx``) and a copy of the tiny reader."""
    sys.path.insert(0, str(ROOT))
    from tests.helpers import write_model

    for name, spec in model_specs().items():
        write_model(folder / f"{name}.onnx", spec)
    shutil.copyfile(ROOT / "tests" / "tiny_reader.onnx", folder / "tiny.onnx")


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array, np.uint8).tobytes()).decode("ascii")


def alpha_table() -> np.ndarray:
    """``(256, 256, 4)`` RGBA: row = alpha, column = level; every alpha over every level."""
    level = np.arange(256)
    alpha = np.repeat(level[:, None], 256, axis=1)
    colour = np.stack([level, 255 - level, (level * 37) % 256], axis=-1)  # (256, 3)
    return np.dstack([np.broadcast_to(colour, (256, 256, 3)), alpha]).astype(np.uint8)


def all_colours() -> np.ndarray:
    """``(4096, 4096, 3)``: every 24-bit RGB colour once, red the slowest, blue the fastest."""
    levels = np.arange(256, dtype=np.uint8)
    rgb = np.empty((1 << 24, 3), np.uint8)
    rgb[:, 0] = np.repeat(levels, 1 << 16)
    rgb[:, 1] = np.tile(np.repeat(levels, 256), 256)
    rgb[:, 2] = np.tile(levels, 1 << 16)
    return rgb.reshape(4096, 4096, 3)


def expected(folder: Path = GOLDEN) -> dict:
    """What the current Python reader gives on the golden models and images."""
    from captcha_ocr.images import load_image
    from captcha_ocr.infer import Reader

    images = sorted(p.name for p in (folder / "images").iterdir() if p.name not in RESIZE_SOURCES)
    reads = []
    for model in ALLOWED:
        reader = Reader.load(folder / f"{model}.onnx", threads=1)
        for image in images:
            pixels = reader.preprocess(folder / "images" / image)  # (H, W, C) uint8
            log_probs = reader.log_probs(pixels[None])  # (1, T, classes)
            text = {}
            for allowed in (None, ALLOWED[model]):
                prediction = reader.decode(log_probs, allowed_chars=allowed)[0]
                text[allowed] = (prediction.text, prediction.confidence)
            reads.append(
                {
                    "model": f"{model}.onnx",
                    "image": f"images/{image}",
                    "pixels_sha256": hashlib.sha256(pixels.tobytes()).hexdigest(),
                    "text": text[None][0],
                    "confidence": text[None][1],
                    "allowed_chars": ALLOWED[model],
                    "allowed_text": text[ALLOWED[model]][0],
                    "allowed_confidence": text[ALLOWED[model]][1],
                    "probs": np.round(np.exp(log_probs[0].astype(np.float64)), DECIMALS).tolist(),
                }
            )
    resizes = [
        {
            "image": f"images/{source}",
            "width": width,
            "height": height,
            "channels": channels,
            "pixels": _b64(load_image(folder / "images" / source, height, width, channels)),
        }
        for source, channels in RESIZE_SOURCES.items()
        for width, height in RESIZE_TARGETS
    ]
    table = alpha_table()
    colours = all_colours()
    return {
        "about": "made by js/make_golden.py from the Python reader; do not edit",
        "reads": reads,
        "resizes": resizes,
        "alpha_table": {  # sha256 of the model input, by channels
            str(channels): hashlib.sha256(
                load_image(table, 256, 256, channels).tobytes()
            ).hexdigest()
            for channels in (1, 3)
        },
        "all_colours_to_grey": hashlib.sha256(
            load_image(colours, 4096, 4096, 1).tobytes()
        ).hexdigest(),
    }


def to_json(data: dict) -> str:
    """``data`` as JSON, one read or resize a line (diffs stay readable, the file small)."""
    lines = ["{"]
    for i, (key, value) in enumerate(data.items()):
        comma = "," if i < len(data) - 1 else ""
        if isinstance(value, list):
            items = [json.dumps(item, ensure_ascii=False) for item in value]
            lines.append(f' "{key}": [\n  ' + ",\n  ".join(items) + f"\n ]{comma}")
        else:
            lines.append(f' "{key}": {json.dumps(value, ensure_ascii=False)}{comma}')
    return "\n".join(lines) + "\n}\n"


def main() -> int:
    sys.path.insert(0, str(ROOT / "src"))
    from captcha_ocr.files import write_text_atomic

    make_images(GOLDEN / "images")
    build_models(GOLDEN)
    data = expected(GOLDEN)
    write_text_atomic(GOLDEN / JSON_FILE, to_json(data))
    print(f"wrote {GOLDEN} ({len(data['reads'])} reads, {len(data['resizes'])} resizes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
