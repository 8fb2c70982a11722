"""load_image: every image mode and source kind -> (H, W, C) uint8; bad input -> ImageLoadError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.images import (
    ImageLoadError,
    image_size,
    is_image_path,
    load_image,
    open_image,
    read_header,
)
from captcha_ocr.sizes import ImageSize
from tests.helpers import encode


def save(tmp_path: Path, name: str, image: Image.Image, **params) -> Path:
    path = tmp_path / name
    image.save(path, **params)
    return path


def left_right(mode: str, left, right, size=(8, 4)) -> Image.Image:
    """An image whose left half is ``left`` and right half ``right``."""
    width, height = size
    image = Image.new(mode, size, left)
    image.paste(right, (width // 2, 0, width, height))
    return image


def test_image_load_error_is_a_captcha_ocr_error():
    assert issubclass(ImageLoadError, CaptchaOCRError)


# --- modes ---------------------------------------------------------------------------------


def test_rgb(tmp_path):
    path = save(tmp_path, "rgb.png", left_right("RGB", (255, 0, 0), (0, 0, 255)))
    out = load_image(path, 4, 8, 3)
    assert out.dtype == np.uint8
    assert out.shape == (4, 8, 3)
    assert out[0, 0].tolist() == [255, 0, 0]
    assert out[0, -1].tolist() == [0, 0, 255]
    grey = load_image(path, 4, 8, 1)
    assert grey.shape == (4, 8, 1)
    # ITU-R 601-2 luma: L = R * 299/1000 + G * 587/1000 + B * 114/1000
    assert grey[0, 0, 0] == 76
    assert grey[0, -1, 0] == 29


def test_rgba_transparent_background_is_white(tmp_path):
    # Black, fully transparent background; opaque dark-red text on the right.
    image = left_right("RGBA", (0, 0, 0, 0), (120, 0, 0, 255))
    path = save(tmp_path, "rgba.png", image)
    rgb = load_image(path, 4, 8, 3)
    assert rgb[0, 0].tolist() == [255, 255, 255]
    assert rgb[0, -1].tolist() == [120, 0, 0]
    grey = load_image(path, 4, 8, 1)
    assert grey[0, 0, 0] == 255
    assert grey[0, -1, 0] == 36  # 120 * 0.299


def test_rgba_half_transparent_blends_with_white():
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 128))
    out = load_image(encode(image), 4, 4, 1)
    assert abs(int(out[0, 0, 0]) - 127) <= 1


def test_la_transparent_background_is_white(tmp_path):
    path = save(tmp_path, "la.png", left_right("LA", (0, 0), (30, 255)))
    assert Image.open(path).mode == "LA"
    out = load_image(path, 4, 8, 1)
    assert out[0, 0, 0] == 255
    assert out[0, -1, 0] == 30


def test_palette_with_transparent_index_is_white(tmp_path):
    image = Image.new("P", (8, 4), 0)
    image.putpalette([0, 0, 0, 200, 10, 10] + [0, 0, 0] * 254)
    image.paste(1, (4, 0, 8, 4))
    path = save(tmp_path, "p.png", image, transparency=0)
    reopened = Image.open(path)
    assert reopened.mode == "P"
    assert reopened.info.get("transparency") == 0
    out = load_image(path, 4, 8, 3)
    assert out[0, 0].tolist() == [255, 255, 255]  # index 0 is black, but transparent
    assert out[0, -1].tolist() == [200, 10, 10]


def test_palette_without_transparency_keeps_colours(tmp_path):
    image = Image.new("P", (8, 4), 0)
    image.putpalette([0, 0, 0, 200, 10, 10] + [0, 0, 0] * 254)
    image.paste(1, (4, 0, 8, 4))
    out = load_image(save(tmp_path, "p.png", image), 4, 8, 3)
    assert out[0, 0].tolist() == [0, 0, 0]
    assert out[0, -1].tolist() == [200, 10, 10]


@pytest.mark.parametrize(
    ("mode", "background", "key", "text"),
    [("L", 0, 0, 30), ("RGB", (0, 0, 0), (0, 0, 0), (30, 30, 30))],
)
def test_colour_key_transparency_is_white(tmp_path, mode, background, key, text):
    path = save(tmp_path, "key.png", left_right(mode, background, text), transparency=key)
    reopened = Image.open(path)
    assert reopened.mode == mode
    assert reopened.info.get("transparency") == key
    out = load_image(path, 4, 8, 1)
    assert out[0, -1, 0] == 30
    assert out[0, 0, 0] == 255


def test_grey_l(tmp_path):
    path = save(tmp_path, "l.png", left_right("L", 17, 230))
    out = load_image(path, 4, 8, 1)
    assert out[..., 0].tolist() == [[17] * 4 + [230] * 4] * 4
    rgb = load_image(path, 4, 8, 3)
    assert rgb[0, 0].tolist() == [17, 17, 17]


def test_16_bit_png_is_scaled_by_range(tmp_path):
    values = np.array([[0, 32768, 65535, 257, 129]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    out = load_image(path, 1, 5, 1)
    assert out[0, :, 0].tolist() == [0, 128, 255, 1, 1]  # rounded, not truncated
    assert load_image(path, 1, 5, 3)[0, 2].tolist() == [255, 255, 255]


def test_1_bit(tmp_path):
    image = Image.new("1", (8, 4), 0)
    image.paste(1, (4, 0, 8, 4))
    path = save(tmp_path, "bits.png", image)
    assert Image.open(path).mode == "1"
    out = load_image(path, 4, 8, 1)
    assert out[0, 0, 0] == 0
    assert out[0, -1, 0] == 255


def test_jpeg(tmp_path):
    path = save(tmp_path, "x.jpg", Image.new("RGB", (16, 8), (200, 200, 200)), quality=95)
    out = load_image(path, 8, 16, 3)
    assert np.abs(out.astype(int) - 200).max() <= 2


def test_animated_gif_reads_the_first_frame(tmp_path):
    frames = [Image.new("L", (8, 4), 20), Image.new("L", (8, 4), 220)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(path) as check:
        assert check.n_frames == 2
    out = load_image(path, 4, 8, 1)
    assert np.all(out == 20)


# --- sources -------------------------------------------------------------------------------


def test_path_str_bytes_and_pil_agree(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(6, 10, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    path = save(tmp_path, "x.png", image)
    data = path.read_bytes()
    expected = load_image(path, 6, 10, 3)
    np.testing.assert_array_equal(expected, pixels)
    for source in (str(path), data, bytearray(data), memoryview(data), image, pixels):
        np.testing.assert_array_equal(load_image(source, 6, 10, 3), pixels)


@pytest.mark.parametrize("shape", [(6, 10), (6, 10, 1)])
def test_grey_arrays(shape):
    array = np.arange(60, dtype=np.uint8).reshape(shape)
    out = load_image(array, 6, 10, 1)
    assert out.shape == (6, 10, 1)
    np.testing.assert_array_equal(out[..., 0], array.reshape(6, 10))
    rgb = load_image(array, 6, 10, 3)
    np.testing.assert_array_equal(rgb[..., 1], array.reshape(6, 10))


def test_rgb_array():
    array = np.zeros((4, 8, 3), np.uint8)
    array[..., 2] = 250
    out = load_image(array, 4, 8, 3)
    np.testing.assert_array_equal(out, array)


def test_rgba_array_composited_on_white():
    array = np.zeros((4, 8, 4), np.uint8)
    array[:, 4:] = (10, 20, 30, 255)  # opaque right half; left half is transparent black
    out = load_image(array, 4, 8, 3)
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, -1].tolist() == [10, 20, 30]


def test_uint16_array_scaled_by_range():
    array = np.array([[0, 32768, 65535, 257, 129]], dtype=np.uint16)
    out = load_image(array, 1, 5, 1)
    assert out[0, :, 0].tolist() == [0, 128, 255, 1, 1]  # rounded, not truncated
    rgb16 = np.full((2, 2, 3), 65535, np.uint16)
    assert np.all(load_image(rgb16, 2, 2, 3) == 255)


def test_float_array_in_unit_range_is_scaled():
    array = np.array([[0.0, 1.0]], dtype=np.float32)
    assert load_image(array, 1, 2, 1)[0, :, 0].tolist() == [0, 255]


def test_array_input_not_modified():
    array = np.full((4, 8, 4), 7, np.uint8)
    array[..., 3] = 0
    before = array.copy()
    load_image(array, 2, 4, 1)
    np.testing.assert_array_equal(array, before)


@pytest.mark.parametrize("shape", [(4,), (4, 8, 2), (4, 8, 5), (2, 4, 8, 3), (1, 4, 8, 1)])
def test_bad_array_shape(shape):
    with pytest.raises(ImageLoadError, match=r"\(H, W\)"):
        load_image(np.zeros(shape, np.uint8), 4, 8, 1)


# --- resizing ------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(("height", "width"), [(32, 128), (50, 200), (10, 10), (80, 300)])
def test_resize_to_model_input(tmp_path, channels, height, width):
    path = save(tmp_path, "x.png", Image.new("RGB", (200, 50), (90, 90, 90)))
    out = load_image(path, height, width, channels)
    assert out.shape == (height, width, channels)
    assert out.dtype == np.uint8
    assert np.all(out == 90)  # a uniform image stays uniform


def test_resize_keeps_left_right_layout():
    array = np.zeros((20, 40), np.uint8)
    array[:, 20:] = 255
    out = load_image(array, 10, 80, 1)[..., 0]
    assert np.all(out[:, :30] == 0)
    assert np.all(out[:, 50:] == 255)


# --- errors --------------------------------------------------------------------------------


def valid_png(size=(20, 20)) -> bytes:
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels))


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageLoadError, match="not an image"):
        load_image(path, 4, 4, 1)


def test_truncated_png(tmp_path):
    data = valid_png()
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match=r"cut\.png"):
        load_image(path, 4, 4, 1)
    with pytest.raises(ImageLoadError):
        load_image(data[: len(data) // 2], 4, 4, 1)


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    with pytest.raises(ImageLoadError, match=r"notes\.png: not an image"):
        load_image(path, 4, 4, 1)


def test_missing_path(tmp_path):
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "missing.png", 4, 4, 1)


def test_folder(tmp_path):
    folder = tmp_path / "folder.png"
    folder.mkdir()
    with pytest.raises(ImageLoadError, match="folder"):
        load_image(folder, 4, 4, 1)


def test_over_max_pixels(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(valid_png((20, 20)))  # 400 pixels
    with pytest.raises(ImageLoadError, match="over the limit"):
        load_image(path, 4, 4, 1, max_pixels=100)
    assert load_image(path, 4, 4, 1, max_pixels=400).shape == (4, 4, 1)


def test_max_pixels_checked_before_decoding():
    # The header and the start of the pixel data only: the size is known, the pixels are
    # missing. Decoding would fail as "unreadable"; the size check must fail first.
    data = valid_png((20, 20))
    header_only = data[: data.index(b"IDAT") + 8]
    with pytest.raises(ImageLoadError, match="unreadable"):
        load_image(header_only, 4, 4, 1)
    with pytest.raises(ImageLoadError, match="20x20 pixels is over the limit of 100"):
        load_image(header_only, 4, 4, 1, max_pixels=100)


def test_max_pixels_does_not_decode(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    path.write_bytes(valid_png((20, 20)))
    decoded = []
    original = Image.Image.load

    def spy(self):
        decoded.append(self.size)
        return original(self)

    monkeypatch.setattr(Image.Image, "load", spy)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", spy)
    with pytest.raises(ImageLoadError):
        open_image(path, max_pixels=100)
    assert decoded == []
    open_image(path, max_pixels=1000)
    assert decoded  # the spy does see a real decode


def test_image_size_and_suffixes(tmp_path):
    path = tmp_path / "x.PNG"
    path.write_bytes(valid_png((12, 7)))
    assert image_size(path) == (12, 7)
    broken = tmp_path / "y.png"
    broken.write_text("nope")
    assert image_size(broken) is None
    assert is_image_path(path)
    assert not is_image_path(tmp_path / "labels.csv")


# --- read_header: what inspect learns from a file without decoding it ------------------------

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 40\n%%EndComments\nshowpage\n%%EOF\n"


def test_read_header_gives_size_and_mode_without_decoding(tmp_path, monkeypatch):
    path = save(tmp_path, "a.png", Image.new("LA", (12, 7)))
    decoded = []
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", lambda self: decoded.append(self))
    header = read_header(path, verify=True)
    assert header == ((12, 7), "LA") and isinstance(header.size, ImageSize)
    assert header.size.width == 12 and decoded == []
    assert image_size(path) == ImageSize(width=12, height=7)


def test_read_header_refuses_what_load_image_refuses(tmp_path):
    eps = tmp_path / "eps.png"
    eps.write_bytes(EPS)  # PostScript: Pillow would hand it to Ghostscript
    with pytest.raises(ImageLoadError, match="not an image file"):
        read_header(eps)
    with pytest.raises(ImageLoadError, match="not an image file"):
        load_image(eps, 8, 8, 1)
    assert image_size(eps) is None
    big = tmp_path / "big.png"
    big.write_bytes(valid_png((100, 100)))
    with pytest.raises(ImageLoadError, match="over the limit"):
        read_header(big, max_pixels=1000)
    assert image_size(big) == (100, 100)  # a size is a size; loading it is another matter
    with pytest.raises(ImageLoadError, match="no such file"):
        read_header(tmp_path / "missing.png")


def test_read_header_verify_finds_a_damaged_file(tmp_path):
    data = valid_png((40, 20))
    path = tmp_path / "cut.png"
    path.write_bytes(data[:-20])  # the header is whole, the data is not
    assert read_header(path) == ((40, 20), "RGB")
    with pytest.raises(ImageLoadError, match=r"cut\.png"):
        read_header(path, verify=True)
