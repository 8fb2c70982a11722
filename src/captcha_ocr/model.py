"""The networks: raw pixels in, per-time-step log-probabilities out. No loss, no I/O.

Every preset maps ``(B, H, W, C)`` uint8-range floats to ``(B, T, num_classes)``
log-probabilities (class 0 is the CTC blank). Pixel scaling is the first layer, so exported
models take raw 0-255 pixels. Only built-in layers are used (no ``Lambda``), so a saved
``model.keras`` reloads in Keras 3's safe mode.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

from captcha_ocr.config import ModelSpec
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.files import atomic_path
from captcha_ocr.keras_quiet import keras
from captcha_ocr.presets import get_preset
from captcha_ocr.runfolder import BEST_MODEL, CONFIG_FILE

layers = keras.layers

INPUT_NAME = "image"


def _tutorial_resnet(inputs: keras.KerasTensor, num_classes: int) -> keras.KerasTensor:
    """The tutorial's network, exactly: nine residual blocks, a 52-step sequence read row by
    row from the 4x13 feature map, a BiLSTM of 128 units per direction (~0.47 M parameters)."""

    def block(x, filters: int, strides: int, skip_conv: bool):
        shortcut = x
        x = layers.Conv2D(
            filters, 3, strides=strides, padding="same", kernel_initializer="he_uniform"
        )(x)
        x = layers.BatchNormalization()(x)
        x = layers.LeakyReLU(negative_slope=0.1)(x)
        x = layers.Conv2D(filters, 3, padding="same", kernel_initializer="he_uniform")(x)
        x = layers.BatchNormalization()(x)
        if skip_conv:
            shortcut = layers.Conv2D(filters, 1, strides=strides, padding="same")(shortcut)
        x = layers.Add()([x, shortcut])
        x = layers.LeakyReLU(negative_slope=0.1)(x)
        return layers.Dropout(0.2)(x)

    x = inputs
    for filters, strides, skip_conv in [
        (16, 1, True), (16, 2, True), (16, 1, False),
        (32, 2, True), (32, 1, False),
        (64, 2, True), (32, 1, True),
        (64, 2, True), (64, 1, False),
    ]:  # fmt: skip
        x = block(x, filters, strides, skip_conv)
    height, width, channels = x.shape[1:]
    x = layers.Reshape((height * width, channels))(x)  # (B, 4*13, 64) for 50x200 input
    x = layers.Bidirectional(layers.LSTM(128, return_sequences=True))(x)
    x = layers.Dropout(0.2)(x)
    return layers.Dense(num_classes)(x)


def _conv_bn_relu(x, filters: int):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.ReLU()(x)


def _columns_to_sequence(x):
    """(B, H, W, C) feature map -> (B, W, H*C): time runs left to right, one step a column."""
    height, width, channels = x.shape[1:]
    x = layers.Permute((2, 1, 3))(x)  # (B, W, H, C)
    return layers.Reshape((width, height * channels))(x)


def _crnn(inputs: keras.KerasTensor, num_classes: int, width_stride: int = 8) -> keras.KerasTensor:
    """A small, fast CRNN: four conv stages shrink the height 16x and the width 8x (4x when
    labels are long for the width: ``presets.LONG_LABELS`` picks ``width_stride`` 8 or 4), so
    the sequence runs left to right, one step per 8 px column (25 steps for 200 px), then a
    linear projection and one BiLSTM. Linear (not ReLU) projection and BatchNorm everywhere
    keep CTC off the all-blank plateau early."""
    x = _conv_bn_relu(inputs, 16)
    x = layers.MaxPooling2D((2, 2))(x)  # (B, H/2, W/2, 16)
    x = _conv_bn_relu(x, 32)
    x = layers.MaxPooling2D((2, 2))(x)  # (B, H/4, W/4, 32)
    x = _conv_bn_relu(x, 64)
    x = layers.MaxPooling2D((2, 2) if width_stride == 8 else (2, 1))(x)  # (B, H/8, W/s, 64)
    x = _conv_bn_relu(x, 64)
    x = layers.MaxPooling2D((2, 1))(x)  # (B, H/16, W/s, 64)
    x = _columns_to_sequence(x)  # (B, W/s, H/16*64)
    x = layers.Dense(96)(x)
    x = layers.Dropout(0.2)(x)
    x = layers.Bidirectional(layers.LSTM(64, return_sequences=True))(x)  # (B, T, 128)
    x = layers.Dropout(0.2)(x)
    return layers.Dense(num_classes)(x)


def _tiny_crnn(inputs: keras.KerasTensor, num_classes: int) -> keras.KerasTensor:
    """A few thousand parameters: for tests and smoke runs, not for accuracy."""
    x = _conv_bn_relu(inputs, 8)
    x = layers.MaxPooling2D((2, 2))(x)
    x = _conv_bn_relu(x, 16)
    x = layers.MaxPooling2D((2, 2))(x)
    x = _columns_to_sequence(x)
    x = layers.Dense(32)(x)
    x = layers.Bidirectional(layers.GRU(16, return_sequences=True))(x)
    return layers.Dense(num_classes)(x)


# The networks by name: presets.Preset.builder picks one.
BUILDERS: dict[str, Callable[..., keras.KerasTensor]] = {
    "crnn": _crnn,
    "tutorial_resnet": _tutorial_resnet,
    "tiny_crnn": _tiny_crnn,
}


def build_model(spec: ModelSpec) -> keras.Model:
    """The network of ``spec.preset`` for ``spec``'s input size and charset.

    >>> spec = ModelSpec("tiny", "abc", height=32, width=96, channels=1, max_label_length=4)
    >>> build_model(spec).output_shape  # doctest: +SKIP
    (None, 24, 4)
    """
    preset = get_preset(spec.preset)
    if not spec.input_size.covers(preset.min_size):
        raise CaptchaOCRError(
            f"preset {spec.preset!r} needs images of at least {preset.min_size} px; "
            f"got {spec.input_size} (set --width/--height)"
        )
    inputs = keras.Input(spec.input_size.shape(spec.channels), name=INPUT_NAME)
    x = layers.Rescaling(1.0 / 255.0)(inputs)
    options = {}
    if preset.width_stride is not None:
        options["width_stride"] = preset.width_stride.pixels(spec.width, spec.max_label_length)
    logits = BUILDERS[preset.builder](x, spec.num_classes, **options)
    # Log-probabilities, not logits: the CTC loss accepts them as they are (log_softmax is
    # idempotent) and readers get probabilities without another softmax.
    outputs = layers.Activation("log_softmax", name="log_probs", dtype="float32")(logits)
    return keras.Model(inputs, outputs, name=f"captcha_ocr_{spec.preset}")


def fold_input_scaling(model: keras.Model) -> keras.Model:
    """The same function without its pixel-scaling layer: the 1/255 moves into the kernels of
    the layers that read the scaled pixels (a convolution is linear, so ``W (x / 255) = (W /
    255) x``). For export: ONNX Runtime spent about a tenth of a 200x50 read multiplying the
    input. ``model`` is returned unchanged if its scaling has an offset or a reader of the
    scaled pixels is not a convolution or dense layer."""
    scaling = next((layer for layer in model.layers if isinstance(layer, layers.Rescaling)), None)
    if scaling is None or scaling.offset != 0 or not isinstance(scaling.scale, (int, float)):
        return model
    readers = [layer for layer in model.layers if _reads(layer, scaling.output)]
    if not readers or not all(isinstance(r, (layers.Conv2D, layers.Dense)) for r in readers):
        return model

    def clone(layer):
        if layer is scaling:
            return layers.Identity(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    folded = keras.models.clone_model(model, clone_function=clone)
    folded.set_weights(model.get_weights())  # Rescaling and Identity hold no weights
    for reader in readers:
        kernel = folded.get_layer(reader.name).kernel
        kernel.assign(kernel * scaling.scale)
    return folded


def _reads(layer, tensor: keras.KerasTensor) -> bool:
    inputs = layer.input if isinstance(layer.input, list) else [layer.input]
    return any(x is tensor for x in inputs)


def time_steps(model: keras.Model) -> int:
    """Length T of the output sequence: the most CTC steps a label can use."""
    return int(model.output_shape[1])


# --- saving and loading ---------------------------------------------------------------------


def save_model_atomic(model: keras.Model, path: Path) -> None:
    """Save a ``.keras`` file so that a crash mid-save leaves the previous one intact."""
    with atomic_path(path) as tmp:
        model.save(tmp)


def load_best_model(run_dir: str | Path) -> keras.Model:
    """The best checkpoint of a run, in safe mode (no code in the file is executed)."""
    path = Path(run_dir) / BEST_MODEL
    if not (Path(run_dir) / CONFIG_FILE).is_file():
        raise CaptchaOCRError(f"{run_dir} is not a run folder: {CONFIG_FILE} is missing")
    if not path.is_file():
        raise CaptchaOCRError(f"run folder {run_dir} has no {BEST_MODEL}; train it first")
    return load_keras_model(path)


def load_keras_model(path: Path, compile: bool = False) -> keras.Model:
    """Load a ``.keras`` file in safe mode: a file holding code (a ``Lambda`` layer, say) is
    refused, never run."""
    if not zipfile.is_zipfile(path):  # Keras would say "file not found"
        raise CaptchaOCRError(
            f"{path} cannot be loaded: it is not a .keras file (damaged or cut short?)"
        )
    try:
        return keras.models.load_model(path, compile=compile, safe_mode=True)
    except Exception as error:  # Keras raises many types for damaged archives
        text = str(error).strip()
        if "safe_mode" in text or "arbitrary code" in text:
            reason = "it holds Python code (a Lambda layer?), which safe mode never runs"
        else:
            reason = (text.splitlines() or [type(error).__name__])[0][:200]
        raise CaptchaOCRError(
            f"{path} cannot be loaded: {reason}; use a model trained by captcha-ocr"
        ) from None
