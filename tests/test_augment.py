"""Seeded augmentation: identity at zero strength, reproducible, background-filled geometry."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest

from captcha_ocr import augment
from captcha_ocr.augment import augment_batch, augment_image, background_colour
from captcha_ocr.config import AugmentConfig
from captcha_ocr.images import border_colour

ZERO = AugmentConfig(0, 0, 0, 0, 0, 0, 0, 0, after_plateau=False)  # from the first epoch
ALWAYS = AugmentConfig(probability=1.0)  # every default strength, on every image


def captcha_like(channels: int, seed: int = 0, height: int = 40, width: int = 120) -> np.ndarray:
    """Light background with a few dark strokes and some speckle: (H, W, C) uint8."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, channels), 220, np.uint8)
    for x in range(15, width - 15, 20):
        image[10:30, x : x + 4] = rng.integers(0, 60)
    image[rng.random((height, width)) < 0.05] = 150
    return image


def test_all_zero_config_is_identity():
    assert all(getattr(ZERO, f.name) == 0 for f in dataclasses.fields(ZERO))
    for channels in (1, 3):
        image = captcha_like(channels)
        out = augment_image(image, ZERO, np.random.default_rng(0))
        np.testing.assert_array_equal(out, image)


def test_zero_strengths_with_probability_one_is_identity():
    config = dataclasses.replace(ZERO, probability=1.0)
    image = captcha_like(3)
    for seed in range(5):
        np.testing.assert_array_equal(
            augment_image(image, config, np.random.default_rng(seed)), image
        )


def test_default_config_changes_the_image():
    image = captcha_like(1)
    out = augment_image(image, ALWAYS, np.random.default_rng(0))
    assert not np.array_equal(out, image)


@pytest.mark.parametrize("channels", [1, 3])
def test_same_seed_same_output(channels):
    image = captcha_like(channels)
    a = augment_image(image, ALWAYS, np.random.default_rng(123))
    b = augment_image(image, ALWAYS, np.random.default_rng(123))
    np.testing.assert_array_equal(a, b)
    batch = np.stack([captcha_like(channels, seed) for seed in range(4)])
    np.testing.assert_array_equal(
        augment_batch(batch, ALWAYS, np.random.default_rng(9)),
        augment_batch(batch, ALWAYS, np.random.default_rng(9)),
    )


@pytest.mark.parametrize("channels", [1, 3])
def test_different_seeds_differ(channels):
    image = captcha_like(channels)
    outputs = [
        augment_image(image, ALWAYS, np.random.default_rng(seed)).tobytes() for seed in range(5)
    ]
    assert len(set(outputs)) == 5


def test_one_generator_gives_each_image_its_own_draw():
    batch = np.stack([captcha_like(1)] * 3)
    out = augment_batch(batch, ALWAYS, np.random.default_rng(0))
    assert not np.array_equal(out[0], out[1])
    assert not np.array_equal(out[1], out[2])


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("seed", range(4))
def test_shape_and_dtype_preserved(channels, seed):
    image = captcha_like(channels, height=32, width=100)
    strong = AugmentConfig(1.0, 0.5, 0.5, 20.0, 0.5, 0.1, 1.0, 0.1)
    out = augment_image(image, strong, np.random.default_rng(seed))
    assert out.shape == (32, 100, channels)
    assert out.dtype == np.uint8
    batch = augment_batch(np.stack([image, image]), strong, np.random.default_rng(seed))
    assert batch.shape == (2, 32, 100, channels)
    assert batch.dtype == np.uint8


def square_on_background(background: tuple[int, ...]) -> np.ndarray:
    image = np.empty((40, 120, len(background)), np.uint8)
    image[:] = background
    image[12:28, 50:70] = 10  # a dark square in the middle
    return image


@pytest.mark.parametrize("background", [(200,), (200, 180, 160)])
@pytest.mark.parametrize(
    "geometry",
    [
        {"rotation": 30.0},
        {"shear": 0.5},
        {"translate": 0.2},
        {"rotation": 20.0, "shear": 0.3, "translate": 0.1},
    ],
)
def test_geometry_fills_with_background(background, geometry):
    config = dataclasses.replace(ZERO, probability=1.0, **geometry)
    image = square_on_background(background)
    assert background_colour(image) == background
    changed = False
    for seed in range(6):
        out = augment_image(image, config, np.random.default_rng(seed))
        changed |= not np.array_equal(out, image)
        # Corners and borders are far from the square: they stay exactly the background.
        for corner in (out[0, 0], out[0, -1], out[-1, 0], out[-1, -1]):
            assert tuple(int(v) for v in corner) == background
        border = np.concatenate([out[0], out[-1], out[:, 0], out[:, -1]])
        assert (border == np.array(background)).all()
        assert out.min() >= 10  # no black fill anywhere
        # The square is still there, somewhere.
        assert (out <= 20).all(axis=-1).sum() > 50
    assert changed


def test_background_colour_is_border_median():
    image = np.full((10, 20, 3), (250, 240, 230), np.uint8)
    image[3:7, 5:15] = 0  # ink away from the border does not count
    image[0, :3] = 0  # nor a few dark border pixels
    assert background_colour(image) == (250, 240, 230)


@pytest.mark.parametrize("channels", [1, 3])
def test_input_not_modified(channels):
    image = captcha_like(channels)
    before = image.copy()
    strong = AugmentConfig(1.0, 0.5, 0.5, 20.0, 0.5, 0.1, 1.0, 0.1)
    for seed in range(4):
        augment_image(image, strong, np.random.default_rng(seed))
    np.testing.assert_array_equal(image, before)
    batch = np.stack([image, image])
    batch_before = batch.copy()
    out = augment_batch(batch, strong, np.random.default_rng(0))
    np.testing.assert_array_equal(batch, batch_before)
    assert not np.shares_memory(out, batch)


def test_probability_controls_the_share_augmented():
    image = captcha_like(1)
    config = dataclasses.replace(ALWAYS, probability=0.5)
    rng = np.random.default_rng(0)
    changed = sum(not np.array_equal(augment_image(image, config, rng), image) for _ in range(200))
    assert 70 <= changed <= 130


def pillow_morph(image: np.ndarray, erode: bool) -> np.ndarray:
    """Pillow's MinFilter(3) (``erode``) or MaxFilter(3) of ``image`` (H, W, C), averaged
    with the original: what ``augment._morph`` must give."""
    from PIL import Image, ImageFilter

    plain = image[..., 0] if image.shape[2] == 1 else image
    kind = ImageFilter.MinFilter if erode else ImageFilter.MaxFilter
    filtered = np.asarray(Image.fromarray(plain).filter(kind(3)), np.float32)
    blended = np.clip((filtered + plain) / 2.0 + 0.5, 0, 255).astype(np.uint8)
    return blended.reshape(image.shape)


@pytest.mark.parametrize("channels", [1, 3])
def test_erode_dilate_is_the_filter_its_descriptions_name(channels):
    image = captcha_like(channels)
    config = dataclasses.replace(ZERO, probability=1.0, erode_dilate=1.0)
    outs = {
        augment_image(image, config, np.random.default_rng(seed)).tobytes() for seed in range(8)
    }
    for erode in (True, False):
        assert pillow_morph(image, erode).tobytes() in outs  # 3x3, averaged with the original
    # ... and the words say so: once they spoke of a 2x2 filter.
    texts = {
        "augment module": augment.__doc__,
        "augment._morph": augment._morph.__doc__,
        "AugmentConfig.erode_dilate": next(
            line for line in inspect.getsource(AugmentConfig).splitlines() if "erode_dilate" in line
        ),
    }
    for where, text in texts.items():
        assert "3x3" in text and "2x2" not in text, where


@pytest.mark.parametrize("shape", [(80, 200, 1), (50, 70, 3), (1, 5, 1), (7, 1, 3), (2, 2, 1)])
def test_erode_dilate_gives_pillows_numbers_at_every_pixel(shape):
    """The NumPy filter is Pillow's MinFilter(3) / MaxFilter(3) (edges repeated), averaged:
    trainings made before it augment alike."""
    image = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    for erode in (True, False):
        assert np.array_equal(augment._morph(image, erode), pillow_morph(image, erode))


def test_background_colour_is_the_shared_border_estimate():
    image = np.full((10, 20, 3), (250, 240, 230), np.uint8)
    image[0, :10] = (0, 0, 1)  # half the top row: the median falls between two levels
    image[-1, :10] = (0, 0, 1)
    assert border_colour(image).tolist() == [250.0, 240.0, 230.0]
    image[:, 0] = (0, 0, 1)
    assert border_colour(image).tolist() == [125.0, 120.0, 115.5]
    assert background_colour(image) == (125, 120, 115)  # whole levels, for Pillow's fill
