"""Seeded training augmentation on uint8 image arrays (NumPy + Pillow, no TensorFlow).

Geometry (rotation, shear, shift) is one affine warp filled with the image's own background
colour, so no black corners appear that the model could learn from. Ink thickness changes use
a 3x3 min/max filter blended half and half with the original. All randomness comes from the
generator passed in.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from captcha_ocr.config import AugmentConfig
from captcha_ocr.images import border_colour


def background_colour(image: np.ndarray) -> tuple[int, ...]:
    """:func:`~captcha_ocr.images.border_colour` of ``image`` (H, W, C) as whole levels, the
    fill colour Pillow takes."""
    return tuple(int(v) for v in border_colour(image))


def _affine(
    image: np.ndarray, angle_deg: float, shear: float, shift: tuple[float, float]
) -> np.ndarray:
    """Rotate about the centre, shear horizontally and shift; fill with the background."""
    height, width, channels = image.shape
    angle = math.radians(angle_deg)
    cos, sin = math.cos(angle), math.sin(angle)
    cx, cy = width / 2.0, height / 2.0
    # Forward map (about the centre): p' = R @ S @ p + shift; PIL wants the inverse.
    forward = np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, shear], [0.0, 1.0]])
    inverse = np.linalg.inv(forward)
    offset = np.array([cx, cy]) - inverse @ (np.array([cx, cy]) + np.array(shift))
    coefficients = (
        inverse[0, 0],
        inverse[0, 1],
        offset[0],
        inverse[1, 0],
        inverse[1, 1],
        offset[1],
    )
    fill = background_colour(image)
    pil = Image.fromarray(image[..., 0] if channels == 1 else image)
    warped = pil.transform(
        (width, height),
        Image.Transform.AFFINE,
        coefficients,
        resample=Image.Resampling.BILINEAR,
        fillcolor=fill[0] if channels == 1 else fill,
    )
    out = np.asarray(warped, dtype=np.uint8)
    return out[..., None] if out.ndim == 2 else out


def _morph(image: np.ndarray, erode: bool) -> np.ndarray:
    """3x3 min filter (dark ink grows: "erode" of the white background) or max (ink thins),
    averaged with the original."""
    # A 3x3 filter moves every stroke edge by a whole pixel; averaging with the original
    # halves that (an even 2x2 kernel would also shift the image by half a pixel). The same
    # numbers as Pillow's MinFilter(3) / MaxFilter(3), edges repeated outwards, in a twelfth of
    # the time: nine shifted views instead of Pillow's rank filter.
    height, width = image.shape[:2]
    padded = np.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge")
    pick = np.minimum if erode else np.maximum
    filtered = padded[:height, :width].copy()
    for dy in range(3):
        for dx in range(3):
            if dy or dx:
                pick(filtered, padded[dy : dy + height, dx : dx + width], out=filtered)
    out = (filtered.astype(np.float32) + image.astype(np.float32)) / 2.0
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def augment_image(image: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """One randomly augmented copy of ``image`` (H, W, C) uint8.

    >>> img = np.full((50, 200, 1), 200, np.uint8)
    >>> cfg = AugmentConfig(0, 0, 0, 0, 0, 0, 0, 0)
    >>> bool((augment_image(img, cfg, np.random.default_rng(0)) == img).all())
    True
    """
    if config.probability <= 0 or rng.random() >= config.probability:
        return image
    out = image
    height, width = image.shape[:2]
    angle = rng.uniform(-config.rotation, config.rotation) if config.rotation else 0.0
    shear = rng.uniform(-config.shear, config.shear) if config.shear else 0.0
    shift = (
        rng.uniform(-config.translate, config.translate) * width if config.translate else 0.0,
        rng.uniform(-config.translate, config.translate) * height if config.translate else 0.0,
    )
    if angle or shear or shift[0] or shift[1]:
        out = _affine(out, angle, shear, shift)
    if config.erode_dilate and rng.random() < config.erode_dilate:
        out = _morph(out, erode=bool(rng.random() < 0.5))
    if config.brightness or config.contrast or config.noise:
        pixels = out.astype(np.float32)
        if config.contrast:
            mean = pixels.mean()
            pixels = (pixels - mean) * (1.0 + rng.uniform(-config.contrast, config.contrast)) + mean
        if config.brightness:
            pixels = pixels + rng.uniform(-config.brightness, config.brightness) * 255.0
        if config.noise:
            pixels = pixels + rng.normal(0.0, config.noise * 255.0, size=pixels.shape)
        out = np.clip(pixels + 0.5, 0, 255).astype(np.uint8)
    return out


def augment_batch(
    images: np.ndarray, config: AugmentConfig, rng: np.random.Generator
) -> np.ndarray:
    """:func:`augment_image` over a batch ``(B, H, W, C)``; a new array, input untouched."""
    return np.stack([augment_image(image, config, rng) for image in images])
