"""The networks, and the copy of one that is exported: rolled up, its pixel scaling folded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from captcha_ocr.config import ModelSpec
from captcha_ocr.keras_quiet import keras
from captcha_ocr.model import build_model, for_export

layers = keras.layers


def _images(channels: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (3, 32, 100, channels)).astype(np.float32)


@pytest.mark.parametrize("preset", ["tiny", "reference"])  # one reader; two (conv + shortcut)
def test_the_export_copy_computes_the_same_without_its_scaling_layer(preset: str) -> None:
    channels = 3 if preset == "reference" else 1
    model = build_model(ModelSpec(preset, "abc", 32, 100, channels, 4))
    copy = for_export(model)
    assert not any(isinstance(layer, layers.Rescaling) for layer in copy.layers)
    np.testing.assert_allclose(copy(_images(channels)), model(_images(channels)), atol=1e-5)
    first = next(layer for layer in model.layers if isinstance(layer, layers.Conv2D))
    np.testing.assert_allclose(
        copy.get_layer(first.name).kernel.numpy(), first.kernel.numpy() / 255.0, rtol=1e-6
    )


def test_the_default_network_trains_unrolled_and_exports_rolled_up(tmp_path: Path) -> None:
    import onnx

    from captcha_ocr.export import export_model

    spec = ModelSpec("default", "abc", 32, 100, 1, 4)
    model = build_model(spec)
    recurrent = next(layer for layer in model.layers if isinstance(layer, layers.Bidirectional))
    assert recurrent.forward_layer.unroll and recurrent.backward_layer.unroll
    copy = for_export(model)
    rolled = copy.get_layer(recurrent.name)
    assert not rolled.forward_layer.unroll and not rolled.backward_layer.unroll
    np.testing.assert_allclose(copy(_images(1)), model(_images(1)), atol=1e-5)
    path = export_model(model, spec, tmp_path / "m.onnx", check_images=_images(1))
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert "LSTM" in ops and len(ops) < 100, len(ops)  # unrolled: ~1,600 nodes


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
def test_a_scaling_that_cannot_fold_stays(model: keras.Model) -> None:
    copy = for_export(model)
    assert isinstance(copy.layers[1], layers.Rescaling)
    images = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(copy(images), model(images), atol=1e-6)
