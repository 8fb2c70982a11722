"""``train --init RUN``: start a new run from the weights of a trained one.

The network is rebuilt for the new data (its charset, width and label lengths), then every
weight whose shape still fits is copied. The output layer is copied per class: the blank and
each character the source model knows keep their weights, characters new to it start fresh.
The input height may differ from the source's: the projection that reads the rows of the last
feature map (the sequence's features, row by row) is resampled to the new number of rows.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np

from captcha_ocr.basemodel import BASE_NAME, resolve_base
from captcha_ocr.config import (
    INIT_AUTO,
    INIT_NONE,
    ModelSpec,
    TrainConfig,
    auto_init_is_base,
    load_run_config,
)
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.runfolder import BEST_MODEL, CONFIG_FILE

log = logging.getLogger(__name__)


def resolve_init(config: TrainConfig) -> TrainConfig:
    """``config`` with its ``init`` made concrete: a run folder, ``"base"`` or None (random
    weights). ``"auto"`` is ``"base"`` where ``config.auto_init_is_base`` (the package ships a
    base model of the run's network and the run does not pre-train on synthetic captchas).

    >>> resolve_init(TrainConfig(init="none")).init, resolve_init(TrainConfig(preset="tiny")).init
    (None, None)
    """
    init = None if config.init == INIT_NONE else config.init
    if init == INIT_AUTO:
        init = BASE_NAME if auto_init_is_base(config) else None
    elif init not in (None, BASE_NAME):
        # The folder itself, not the link: --init runs/latest --out runs moves latest to the
        # new run's folder as it is made, before the weights are read.
        init = os.path.realpath(init)
    return dataclasses.replace(config, init=init)


def init_spec(source: str | Path) -> ModelSpec:
    """The model spec of the run folder that ``--init`` names (checked to hold a model)."""
    run_dir = resolve_base(source)
    if not (run_dir / CONFIG_FILE).is_file():
        raise CaptchaOCRError(
            f"--init {source}: not a run folder ({CONFIG_FILE} is missing); give the folder "
            "of a finished training run, e.g. runs/latest"
        )
    if not (run_dir / BEST_MODEL).is_file():
        raise CaptchaOCRError(f"--init {source}: the run has no {BEST_MODEL} yet; train it first")
    return load_run_config(run_dir)[0]


def initial_weights(source: str | Path, spec: ModelSpec) -> list[np.ndarray]:
    """Weights for a fresh network of ``spec``, copied from ``source`` wherever they fit."""
    from captcha_ocr.model import build_model, load_best_model

    source_spec = init_spec(source)
    if source_spec.preset != spec.preset:
        raise CaptchaOCRError(
            f"--init {source} is a {source_spec.preset!r} network, this run a {spec.preset!r} "
            f"one; leave --preset out (or give --preset {source_spec.preset})"
        )
    source_model = load_best_model(resolve_base(source))
    target_model = build_model(spec)
    weights = [w.copy() for w in target_model.get_weights()]
    source_weights = source_model.get_weights()
    if len(source_weights) != len(weights):
        raise CaptchaOCRError(
            f"--init {source}: its network differs from this run's ({len(source_weights)} "
            f"weight tensors against {len(weights)}): it was trained by a version of "
            "captcha-ocr with another network for this preset; start from the base model or "
            "from a run of this version"
        )
    classes = _class_map(source_spec.charset, spec.charset)
    copied = fresh = 0
    projection, resampled = _projection(target_model), ""
    output_kernel, output_bias = len(weights) - 2, len(weights) - 1  # the last Dense layer
    for index, (mine, theirs) in enumerate(zip(weights, source_weights)):
        if index in (output_kernel, output_bias):
            known = classes >= 0
            mine[..., known] = theirs[..., classes[known]]
            copied += 1
        elif mine.shape == theirs.shape:
            weights[index] = theirs
            copied += 1
        elif projection is not None and index == projection[0]:
            weights[index] = resample_rows(theirs, projection[1], len(mine) // projection[1])
            resampled = f"; the projection resampled from {source_spec.height} to {spec.height} px"
            copied += 1
        else:
            fresh += 1
    new_chars = "".join(c for c in spec.charset if c not in source_spec.charset)
    log.info(
        "starting from %s: %d of %d weight tensors copied%s%s%s",
        source,
        copied,
        len(weights),
        resampled,
        f"; {fresh} did not fit and start fresh" if fresh else "",
        f"; characters new to it: {new_chars!r}" if new_chars else "",
    )
    return weights


def _class_map(source_charset: str, charset: str) -> np.ndarray:
    """For each output class of the new network, its class in the source network (-1: new).
    Class 0 is the CTC blank in both; character ``charset[i]`` is class ``i + 1``."""
    source_class = {char: i + 1 for i, char in enumerate(source_charset)}
    return np.array([0, *(source_class.get(char, -1) for char in charset)])


def _projection(model) -> tuple[int, int] | None:
    """``(index in get_weights(), channels per row)`` of the kernel of the Dense layer that
    reads a feature map's columns as a sequence (``model._columns_to_sequence``: a Reshape of
    a ``(B, W, H, C)`` map); None for a network without one."""
    from captcha_ocr.model import layers

    index, previous = 0, None
    for layer in model.layers:
        if (
            isinstance(layer, layers.Dense)
            and isinstance(previous, layers.Reshape)
            and len(previous.input.shape) == 4
        ):
            return index, int(previous.input.shape[-1])
        index += len(layer.weights)
        previous = layer
    return None


def resample_rows(kernel: np.ndarray, channels: int, rows: int) -> np.ndarray:
    """A projection kernel ``(R * channels, units)`` over ``R`` feature rows, made for ``rows``
    rows: linearly interpolated along the rows (centres aligned, as an image is resized) and
    scaled by ``R / rows``, so that its sum over the rows keeps its size.

    >>> kernel = np.arange(8, dtype=np.float32).reshape(4, 2)  # 2 rows of 2 channels, 2 units
    >>> resample_rows(kernel, 2, 2).tolist() == kernel.tolist()
    True
    >>> resample_rows(np.ones((2, 1), np.float32), 1, 4).ravel().tolist()  # twice the rows
    [0.5, 0.5, 0.5, 0.5]
    """
    source_rows = kernel.shape[0] // channels
    by_row = kernel.reshape(source_rows, channels, -1)
    centres = np.clip((np.arange(rows) + 0.5) * source_rows / rows - 0.5, 0, source_rows - 1)
    low = np.floor(centres).astype(int)
    high = np.minimum(low + 1, source_rows - 1)
    share = (centres - low)[:, None, None]
    rows_kernel = by_row[low] * (1 - share) + by_row[high] * share
    return (rows_kernel * source_rows / rows).reshape(rows * channels, -1).astype(kernel.dtype)
