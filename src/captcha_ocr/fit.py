"""The training loop: CTC loss, the optimizer, and :func:`fit`, which trains one network in
one run folder (a run, or its ``pretrain/`` part) on the batches of :mod:`captcha_ocr.feed`
while :class:`captcha_ocr.monitor.EpochMonitor` keeps its books after each epoch.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from captcha_ocr.config import ModelSpec, TrainConfig
from captcha_ocr.data import Sample
from captcha_ocr.devices import device_scope, train_step
from captcha_ocr.epochs import augments, batches_per_epoch, ema_momentum
from captcha_ocr.feed import prepare_data, training_batches
from captcha_ocr.keras_quiet import keras
from captcha_ocr.model import build_model, load_keras_model, time_steps
from captcha_ocr.monitor import EpochMonitor
from captcha_ocr.runfolder import (
    CURVES_FILE,
    INTERRUPTED,
    LAST_MODEL,
    LOGS_DIR,
    RunState,
    plot_curves,
)

log = logging.getLogger(__name__)
ops = keras.ops


@keras.saving.register_keras_serializable(package="captcha_ocr")
class CTCLoss(keras.losses.Loss):
    """CTC loss over log-probabilities ``(B, T, C)``; labels ``(B, L)`` padded with 0.

    Class 0 is the blank and never a character, so each label's true length is its count
    of non-zero entries: padding is never read as a character.
    """

    def __init__(self, name: str = "ctc", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        labels = ops.cast(y_true, "int32")
        label_length = ops.sum(ops.cast(ops.not_equal(labels, 0), "int32"), axis=-1)
        batch, steps = ops.shape(y_pred)[0], ops.shape(y_pred)[1]
        logit_length = ops.full((batch,), steps, dtype="int32")
        return ops.ctc_loss(labels, y_pred, label_length, logit_length, mask_index=0)


@dataclass
class TrainResult:
    """What a training run produced."""

    run_dir: Path
    spec: ModelSpec
    config: TrainConfig
    state: RunState
    history: list[dict[str, float]] = field(default_factory=list)
    not_usable: str = ""  # why the run's best model is not usable (it did not learn); "": it is

    @property
    def best(self) -> dict[str, float]:
        rows = [r for r in self.history if int(r["epoch"]) == self.state.best_epoch]
        return rows[0] if rows else {}


def make_optimizer(config: TrainConfig, total_steps: int) -> keras.optimizers.Optimizer:
    """Adam or AdamW with gradient clipping (CTC gradients spike early in training), keeping
    a moving average of the weights when ``config.ema`` is set."""
    average = {"use_ema": True, "ema_momentum": ema_momentum(total_steps)} if config.ema else {}
    if config.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(
            config.learning_rate, weight_decay=config.weight_decay, clipnorm=5.0, **average
        )
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
        return optimizer
    return keras.optimizers.Adam(config.learning_rate, clipnorm=5.0, **average)


def fit(
    run_dir: Path,
    spec: ModelSpec,
    config: TrainConfig,
    train_samples: list[Sample],
    val_samples: list[Sample],
    state: RunState,
    history: list[dict[str, float]],
    progress: bool,
    resume: bool = False,
    initial_weights: list[np.ndarray] | None = None,
    strategy=None,
) -> TrainResult:
    """The training loop proper, writing checkpoints, state and history into ``run_dir``;
    with a ``tf.distribute`` ``strategy`` (see :func:`captcha_ocr.devices.distribution_strategy`),
    data-parallel. ``resume`` continues from ``run_dir/last.keras``.

    Ctrl-C ends it cleanly: the files on disk are those of the last complete epoch, and the
    result's ``state.interrupted`` is set (``model.keras`` is absent when no epoch ended).
    """
    keras.utils.set_random_seed(config.seed)
    with device_scope(strategy):
        model = build_model(spec)
    steps = time_steps(model)
    if not resume:
        log.info(
            "charset %r (%d), labels up to %d chars, input %dx%dx%d, preset %r: %s parameters, %d time steps",
            spec.charset,
            len(spec.charset),
            spec.max_label_length,
            spec.width,
            spec.height,
            spec.channels,
            spec.preset,
            f"{model.count_params():,}",
            steps,
        )
    prepared = prepare_data(train_samples, val_samples, spec, config, progress)
    log.info(
        "split: %d training, %d validation images",
        len(prepared.train_samples),
        len(prepared.val_samples),
    )
    steps_in_epoch = batches_per_epoch(len(prepared.train_images), config.batch_size)
    with device_scope(strategy):  # variables (weights, optimizer slots) live on every device
        if resume:
            model = load_keras_model(run_dir / LAST_MODEL, compile=True)
        else:
            if initial_weights is not None:
                model.set_weights(initial_weights)
            optimizer = make_optimizer(config, config.epochs * steps_in_epoch)
            model.compile(optimizer=optimizer, loss=CTCLoss())
    monitor = EpochMonitor(prepared, config, run_dir, state, history, steps_in_epoch, progress)
    tensorboard = keras.callbacks.TensorBoard(log_dir=str(run_dir / LOGS_DIR), write_graph=False)
    callbacks = keras.callbacks.CallbackList([monitor, tensorboard], model=model)
    log.info("training in %s (Ctrl-C stops cleanly and keeps the best model)", run_dir)
    callbacks.on_train_begin()
    batches, fed_augmented = None, False
    try:
        # Until a stop rule (epochs.STOP_RULES) ends it: the budget may grow (epochs.extension).
        for epoch in itertools.count(state.epochs_done):
            augment = augments(monitor.state, config, epoch)
            if batches is None or augment != fed_augmented:
                if batches is not None:  # augmentation starts here: a new feed from this epoch
                    batches.close()
                    log.info(
                        "validation captchas are read: augmentation starts (epoch %d)", epoch + 1
                    )
                batches = training_batches(prepared, config, epoch, steps_in_epoch, augment)
                fed_augmented = augment
            callbacks.on_epoch_begin(epoch)
            losses = []
            for index in range(steps_in_epoch):
                x, y = next(batches)
                callbacks.on_train_batch_begin(index)
                losses.append(train_step(model, strategy, x, y))
                callbacks.on_train_batch_end(index, {"loss": losses[-1]})
            callbacks.on_epoch_end(epoch, {"loss": float(np.mean(losses))})
            if model.stop_training:
                break
        state = monitor.state
    except KeyboardInterrupt:
        # The files are written as of the last complete epoch; so is this state.
        state = monitor.write_checkpoints() or RunState.load(run_dir)
        del history[state.epochs_done :]
        state.stop_reason = f"{INTERRUPTED} after {state.epochs_done} complete epoch(s)"
        state.save(run_dir)
        log.warning(
            "interrupted: keeping the best checkpoint of %d complete epoch(s)", state.epochs_done
        )
    finally:
        if batches is not None:
            batches.close()
        callbacks.on_train_end()
    plot_curves(history, run_dir / CURVES_FILE)
    if history:
        log.info(
            "%s; best epoch %d: val_cer %.4f, val_wer %.4f (%.0f s)",
            state.stop_reason,
            state.best_epoch,
            state.best_cer,
            next((r["val_wer"] for r in history if r["epoch"] == state.best_epoch), math.nan),
            state.elapsed_s,
        )
    return TrainResult(run_dir, spec, config, state, history)
