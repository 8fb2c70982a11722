"""The networks: folding the pixel scaling into the first kernels for export."""

from __future__ import annotations

import numpy as np
import pytest

from captcha_ocr.config import ModelSpec
from captcha_ocr.keras_quiet import keras
from captcha_ocr.model import build_model, fold_input_scaling

layers = keras.layers


@pytest.mark.parametrize("preset", ["tiny", "reference"])  # one reader; two (conv + shortcut)
def test_folded_model_computes_the_same_without_its_scaling_layer(preset: str) -> None:
    channels = 3 if preset == "reference" else 1
    model = build_model(ModelSpec(preset, "abc", 50, 200, channels, 4))
    images = np.random.default_rng(0).uniform(0, 255, (3, 50, 200, channels)).astype(np.float32)
    folded = fold_input_scaling(model)
    assert not any(isinstance(layer, layers.Rescaling) for layer in folded.layers)
    np.testing.assert_allclose(folded(images), model(images), atol=1e-5)
    first = next(layer for layer in model.layers if isinstance(layer, layers.Conv2D))
    np.testing.assert_allclose(
        folded.get_layer(first.name).kernel.numpy(), first.kernel.numpy() / 255.0, rtol=1e-6
    )


def _scaled(offset: float, reader) -> keras.Model:
    inputs = keras.Input((8, 8, 1))
    x = layers.Rescaling(1 / 255.0, offset=offset)(inputs)
    return keras.Model(inputs, reader(x))


@pytest.mark.parametrize(
    "model",
    [
        _scaled(-1.0, layers.Conv2D(2, 3)),  # an offset does not move into a kernel
        _scaled(0.0, layers.ReLU()),  # not linear
    ],
    ids=["offset", "not-linear"],
)
def test_a_scaling_that_cannot_fold_is_left_in_place(model: keras.Model) -> None:
    assert fold_input_scaling(model) is model
