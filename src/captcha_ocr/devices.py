"""Data-parallel training over several devices (``--devices``) with ``tf.distribute``.

One device needs none of this: :func:`distribution_strategy` returns None and
:func:`train_step` is a plain ``train_on_batch``.
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np

from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.keras_quiet import keras

log = logging.getLogger(__name__)


def distribution_strategy(devices: int):
    """``None`` for one device; else a ``tf.distribute.MirroredStrategy`` over the first
    ``devices`` GPUs or, on a machine without GPUs, over that many logical CPU devices (which
    shares the same cores: it checks the multi-device path, it does not speed anything up).

    >>> distribution_strategy(1) is None
    True
    """
    if devices == 1:
        return None
    import tensorflow as tf  # distribution is TensorFlow's own; the model stays keras-only

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        if len(gpus) < devices:
            raise CaptchaOCRError(
                f"--devices {devices}, but this machine has {len(gpus)} GPU(s); "
                f"use --devices {len(gpus)} or fewer"
            )
        names = [f"/gpu:{k}" for k in range(devices)]
    else:
        cpu = tf.config.list_physical_devices("CPU")[0]
        wanted = [tf.config.LogicalDeviceConfiguration() for _ in range(devices)]
        try:
            tf.config.set_logical_device_configuration(cpu, wanted)
        except RuntimeError:  # TensorFlow already started its devices in this process
            have = tf.config.get_logical_device_configuration(cpu) or [None]
            if len(have) < devices:
                raise CaptchaOCRError(
                    f"--devices {devices}: TensorFlow's devices were already set up with "
                    f"{len(have)} CPU device(s) in this process; train in a new process"
                ) from None
        names = [f"/cpu:{k}" for k in range(devices)]
        log.warning(
            "no GPU: splitting the CPU into %d logical devices (this tests multi-device "
            "training; it is not faster than one device)",
            devices,
        )
    strategy = tf.distribute.MirroredStrategy(names)
    log.info("data-parallel training on %s", ", ".join(names))
    return strategy


def device_scope(strategy) -> contextlib.AbstractContextManager:
    """Where variables are made: mirrored under ``strategy``, the default device without."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def train_step(model: keras.Model, strategy, x: np.ndarray, y: np.ndarray) -> float:
    """One optimizer step on batch ``(x, y)``; returns its loss.

    Under a strategy every device gets its own contiguous share of the batch (a plain
    ``train_on_batch`` would hand each device the whole batch), and Keras averages the
    devices' gradients, so the step equals a one-device step on the whole batch (up to
    BatchNorm, whose statistics are per device).
    """
    if not model.optimizer.built:
        # Before the first step, not inside it: a traced step that makes variables is traced
        # twice (about 3 s a run). Under a strategy its slots are mirrored too.
        with device_scope(strategy):
            model.optimizer.build(model.trainable_variables)
    if strategy is None:
        return float(model.train_on_batch(x, y))
    if model.train_function is None:
        model.make_train_function()
    model.reset_metrics()  # report this batch's loss, not a running mean
    logs = model.train_function(iter([(split_batch(strategy, x), split_batch(strategy, y), None)]))
    return float(keras.ops.convert_to_numpy(logs["loss"]))


def split_batch(strategy, array: np.ndarray):
    """``array`` as per-device values: device k gets the k-th contiguous share of the rows."""
    import tensorflow as tf

    shares = np.array_split(array, strategy.num_replicas_in_sync)
    devices = strategy.extended.worker_devices

    def on_device(context) -> tf.Tensor:  # copied once, straight to the device that uses it
        with tf.device(devices[context.replica_id_in_sync_group]):
            return tf.convert_to_tensor(shares[context.replica_id_in_sync_group])

    return strategy.experimental_distribute_values_from_function(on_device)
