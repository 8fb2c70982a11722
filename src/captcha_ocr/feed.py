"""The training input: both splits loaded and encoded, and the augmented batches that feed
the training loop (:mod:`captcha_ocr.fit`). No Keras here: NumPy and Pillow only.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from captcha_ocr.augment import augment_batch
from captcha_ocr.charset import Charset
from captcha_ocr.config import ModelSpec, TrainConfig
from captcha_ocr.data import Sample, load_samples


@dataclass
class PreparedData:
    """Pixels and encoded labels of both splits, and the model spec measured from them."""

    spec: ModelSpec
    train_samples: list[Sample]
    val_samples: list[Sample]
    train_images: np.ndarray  # (N, H, W, C) uint8
    val_images: np.ndarray
    train_labels: np.ndarray  # (N, L) int32, padded with the blank (0)
    val_labels: np.ndarray


def encode_labels(charset: Charset, labels: list[str], length: int) -> np.ndarray:
    """Labels -> ``(N, length)`` int32 classes, padded with the blank (0)."""
    encoded = np.zeros((len(labels), length), dtype=np.int32)
    for row, label in enumerate(labels):
        classes = charset.encode(label)
        encoded[row, : len(classes)] = classes
    return encoded


def prepare_data(
    train_samples: list[Sample],
    val_samples: list[Sample],
    spec: ModelSpec,
    config: TrainConfig,
    progress: bool = False,
) -> PreparedData:
    """Load and encode both splits (bad images are skipped or, with ``strict``, an error)."""
    charset = Charset(spec.charset)
    for sample in (*train_samples, *val_samples):
        charset.encode(sample.label)  # a resumed run with new characters fails here, clearly
    loaded_train = load_samples(
        train_samples, spec.height, spec.width, spec.channels, config.strict, progress=progress
    )
    loaded_val = load_samples(
        val_samples, spec.height, spec.width, spec.channels, config.strict, progress=progress
    )
    length = spec.max_label_length
    return PreparedData(
        spec,
        loaded_train.samples,
        loaded_val.samples,
        loaded_train.images,
        loaded_val.images,
        encode_labels(charset, [s.label for s in loaded_train.samples], length),
        encode_labels(charset, [s.label for s in loaded_val.samples], length),
    )


def training_batches(
    data: PreparedData,
    config: TrainConfig,
    start_epoch: int,
    steps_per_epoch: int,
    augment: bool = True,
    depth: int = 6,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Training batches ``(x (B, H, W, C) float32, y (B, L) int32)`` from ``start_epoch`` on,
    augmented when ``augment`` is set, made ``depth`` batches ahead by two worker threads
    (NumPy and Pillow release the GIL), so the model never waits on data. When augmentation
    starts (see ``AugmentConfig.after_plateau``) the loop opens a new feed at that epoch.

    Batch ``k`` of epoch ``e`` depends only on ``(seed, e, k)`` (and ``augment``): a seeded
    shuffle per epoch and a generator per batch, so a resumed run sees the same data as an
    uninterrupted one.

    (A tf.data pipeline calling this through ``tf.numpy_function`` deadlocked here at
    iterator teardown in TF 2.21 (the GIL against a tf.data worker), so the feed is plain
    threads.)
    """
    images, labels = data.train_images, data.train_labels
    n, batch_size = len(images), min(config.batch_size, len(images))

    def make_batch(epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        order = np.random.default_rng([config.seed, epoch]).permutation(n)
        chosen = order[index * batch_size : (index + 1) * batch_size]
        if not augment:
            return images[chosen].astype(np.float32), labels[chosen]
        rng = np.random.default_rng([config.seed, epoch, index, 1])
        return augment_batch(images[chosen], config.augment, rng).astype(np.float32), labels[chosen]

    # Epochs without end: the loop stops when its budget (which may grow) is done.
    jobs = ((e, k) for e in itertools.count(start_epoch) for k in range(steps_per_epoch))
    with concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="batches") as pool:
        pending = collections.deque(
            pool.submit(make_batch, *job) for job in itertools.islice(jobs, depth)
        )
        try:
            while pending:
                future = pending.popleft()
                job = next(jobs, None)
                if job is not None:
                    pending.append(pool.submit(make_batch, *job))
                yield future.result()
        finally:
            for future in pending:
                future.cancel()
