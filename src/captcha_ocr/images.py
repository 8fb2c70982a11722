"""The one preprocessing path: any image -> the model's input array.

Training, evaluation, inference and serving all call :func:`load_image`, so the model sees
the same pixels everywhere. Pixel scaling (/255) happens inside the network, so the array
holds raw 0-255 values.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.sizes import ImageSize

ImageSource = str | os.PathLike | bytes | bytearray | memoryview | Image.Image | np.ndarray

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

# Captchas are small; anything past this many pixels is refused from its header, before it
# is decoded (a decompression bomb of a few KB can otherwise expand to gigabytes).
DEFAULT_MAX_PIXELS = 25_000_000

# Truncated files are errors, never silently half-grey images.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# The formats of IMAGE_SUFFIXES (camera JPEGs that Pillow names MPO open as JPEG). Pillow would
# otherwise also try its rarer parsers on any file, and hand EPS (PostScript: a program) to
# Ghostscript.
PILLOW_FORMATS = ("PNG", "JPEG", "BMP", "DIB", "GIF", "WEBP", "TIFF")


class ImageLoadError(CaptchaOCRError):
    """An image that cannot be read (corrupt, truncated, not an image, too large)."""


class ImageTooLargeError(ImageLoadError):
    """An image refused for its size (from its header, before decoding)."""


@contextlib.contextmanager
def _load_errors(name: str) -> Iterator[None]:
    """Turn whatever Pillow raises on a bad file into :class:`ImageLoadError` naming it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except ImageLoadError:
        raise
    except FileNotFoundError:
        raise ImageLoadError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ImageLoadError(f"{name}: is a folder, not an image") from None
    except UnidentifiedImageError:
        raise ImageLoadError(
            f"{name}: not an image file (or a format Pillow cannot read)"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLargeError(f"{name}: image too large (decompression bomb?)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageLoadError(f"{name}: unreadable image ({error})") from None


def _open_header(handle: BinaryIO, name: str, max_pixels: int | None) -> Image.Image:
    """Pillow's lazy image (header read, pixels not decoded), from the allowed formats only."""
    image = Image.open(handle, formats=PILLOW_FORMATS)
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(
            f"{name}: {width}x{height} pixels is over the limit of {max_pixels:,}"
        )
    return image


def open_image(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open ``source`` as a fully decoded PIL image (first frame of an animation).

    >>> open_image(np.zeros((50, 200), np.uint8)).size
    (200, 50)
    """
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        return _from_array(source)
    name = "<bytes>" if isinstance(source, (bytes, bytearray, memoryview)) else os.fspath(source)
    with _load_errors(name):
        if isinstance(source, (bytes, bytearray, memoryview)):
            handle: BinaryIO = io.BytesIO(bytes(source))
        else:
            handle = open(name, "rb")  # noqa: SIM115 - closed below, after decoding
        with handle:
            image = _open_header(handle, name, max_pixels)
            image.seek(0)
            image.load()
            return image


class ImageHeader(NamedTuple):
    """What a file's header says, without decoding its pixels."""

    size: ImageSize
    mode: str  # Pillow's mode: "L", "RGB", "P", ...


def read_header(
    path: str | os.PathLike, verify: bool = False, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> ImageHeader:
    """Size and mode of the image at ``path``, from the formats :func:`open_image` reads;
    with ``verify``, also Pillow's cheap integrity check (no full decode). Raises
    :class:`ImageLoadError` for a file that :func:`load_image` would refuse for its format,
    its header or (with ``verify``) its damage."""
    name = os.fspath(path)
    with _load_errors(name), open(name, "rb") as handle:
        image = _open_header(handle, name, max_pixels)
        header = ImageHeader(ImageSize(*image.size), image.mode)
        if verify:
            image.verify()
        return header


def to_rgb_or_grey(image: Image.Image, channels: int) -> Image.Image:
    """Convert any mode to ``RGB`` (channels=3) or ``L`` (channels=1).

    Transparency (RGBA, LA, a palette or L/RGB colour key) is composited on white: a
    captcha with a transparent background is dark text on white to a person, while dropping
    the alpha channel would show coloured text on black. 16-bit and 32-bit images are scaled
    to 8 bits by their range, not clipped.
    """
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
        mode = "L"
    if mode == "P" or mode == "PA":
        image = image.convert("RGBA")
        mode = "RGBA"
    # "tRNS" colour keys: one grey level or RGB colour of an L/RGB PNG marks transparency.
    if mode in ("LA", "La", "RGBa") or (mode in ("L", "RGB") and "transparency" in image.info):
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode == "RGBA":
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image)
    target = "L" if channels == 1 else "RGB"
    return image if image.mode == target else image.convert(target)


def load_image(
    source: ImageSource,
    height: int,
    width: int,
    channels: int,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Read any image into the model's input: ``(height, width, channels)`` uint8, 0-255.

    ``source`` may be a path, encoded bytes, a PIL image or a NumPy array ``(H, W)``,
    ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``.

    >>> load_image(np.full((50, 200, 3), 200, np.uint8), 32, 128, 1).shape
    (32, 128, 1)
    """
    image = open_image(source, max_pixels)
    try:
        image = to_rgb_or_grey(image, channels)
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BILINEAR)
    except (OSError, ValueError) as error:  # a mode Pillow cannot convert (LAB, ...)
        raise ImageLoadError(
            f"{_source_name(source)}: cannot convert a {image.mode} image ({error})"
        ) from None
    array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def image_size(path: str | os.PathLike) -> ImageSize | None:
    """The size from the file header, or None when it is not a readable image."""
    try:
        return read_header(path, max_pixels=None).size
    except ImageLoadError:
        return None


def border_colour(image: np.ndarray) -> np.ndarray:
    """Median colour ``(C,)`` of the border pixels of ``image`` ``(H, W, C)``: a captcha's
    background. Floats, as the median of an even count can fall between two levels.

    >>> border_colour(np.full((4, 6, 3), 7, np.uint8)).tolist()
    [7.0, 7.0, 7.0]
    """
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])  # (2W + 2H, C)
    return np.median(border, axis=0)


def _source_name(source: ImageSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, np.ndarray):
        return "<array>"
    return "<image>" if isinstance(source, Image.Image) else "<bytes>"


def _from_array(array: np.ndarray) -> Image.Image:
    if array.dtype.kind not in "buif":
        raise ImageLoadError(f"an image array must hold numbers, not {array.dtype}")
    if array.size == 0:
        raise ImageLoadError(f"an image array must not be empty; got {array.shape}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ImageLoadError("an image array must not hold NaN or infinite values")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageLoadError(
            f"an image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {array.shape}"
        )
    if array.dtype == np.uint16:
        return Image.fromarray((array.astype(np.float64) / 257.0 + 0.5).astype(np.uint8))
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.size and array.max() <= 1.0:
            array = array * 255.0  # floats in [0, 1]
        array = np.clip(array, 0, 255).astype(np.uint8)
    return Image.fromarray(array)


def is_image_path(path: Path) -> bool:
    """True when the file name has one of the image suffixes we read."""
    return path.suffix.lower() in IMAGE_SUFFIXES
