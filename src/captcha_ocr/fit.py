"""The training loop: CTC loss, the augmented input feed, the per-epoch bookkeeping, Ctrl-C.

:func:`fit` trains one network in one run folder (a run, or its ``pretrain/`` part) and
writes its checkpoints, state and history there; :class:`EpochMonitor` validates after each
epoch and carries out what :func:`captcha_ocr.epochs.judge_epoch` decides.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import itertools
import logging
import math
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from captcha_ocr.augment import augment_batch
from captcha_ocr.charset import Charset
from captcha_ocr.config import ModelSpec, TrainConfig
from captcha_ocr.data import Sample, load_samples
from captcha_ocr.decode import ctc_loss, greedy_decode_batch
from captcha_ocr.devices import device_scope, train_step
from captcha_ocr.epochs import (
    augments,
    batches_per_epoch,
    cosine_learning_rate,
    ema_momentum,
    epoch_budget,
    judge_epoch,
    patience_epochs,
    seconds_per_epoch,
)
from captcha_ocr.keras_quiet import keras
from captcha_ocr.metrics import error_rates
from captcha_ocr.model import build_model, load_keras_model, save_model_atomic, time_steps
from captcha_ocr.progress import progress_bar
from captcha_ocr.runfolder import (
    BEST_MODEL,
    CURVES_FILE,
    HISTORY_FILE,
    INTERRUPTED,
    LAST_MODEL,
    LOGS_DIR,
    RunState,
    plot_curves,
    write_history,
)

log = logging.getLogger(__name__)
ops = keras.ops

# The run's files (last.keras, state.json, history.csv, and model.keras when the best moved)
# are written at the first epoch, at the last, and in between at most every
# CHECKPOINT_INTERVAL_S seconds; the last complete epoch waits in memory, and Ctrl-C writes
# it. Writing two .keras files took 0.3 s here, more than a small set's epoch of training
# (45 images: 2 steps of 16): a 40-epoch run of 45 images spent 10 of its 38 s on them.
CHECKPOINT_INTERVAL_S = 10.0
VALIDATION_BATCH = 256


@dataclass
class _Snapshot:
    """The run as of its last complete epoch: raw weights, optimizer slots, counters."""

    weights: list[np.ndarray]
    optimizer: list[np.ndarray]
    state: RunState
    best_weights: list[np.ndarray] | None  # the best epoch's, when not yet written


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

    jobs = ((e, k) for e in range(start_epoch, config.epochs) for k in range(steps_per_epoch))
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


class EpochMonitor(keras.callbacks.Callback):
    """Validation loss, CER, WER and exact-match accuracy after every epoch, then the run's
    bookkeeping as :func:`~captcha_ocr.epochs.judge_epoch` decides it: best checkpoint, last
    checkpoint + state (for resume), history.csv, the learning rate, stopping, and a progress
    bar. It runs first, so later callbacks (TensorBoard) see ``val_cer`` in the logs."""

    def __init__(
        self,
        data: PreparedData,
        config: TrainConfig,
        run_dir: Path,
        state: RunState,
        history: list[dict[str, float]],
        steps_per_epoch: int,
        progress: bool,
    ) -> None:
        super().__init__()
        self.data, self.config, self.run_dir = data, config, run_dir
        self.state, self.history, self.steps_per_epoch = state, history, steps_per_epoch
        self.charset = Charset(data.spec.charset)
        self.val_texts = [s.label for s in data.val_samples]
        self.progress = progress
        self.bar = None
        self.warned = False
        self.started = 0.0
        self.elapsed_before = state.elapsed_s
        self.snapshot: _Snapshot | None = None  # the last complete epoch, until written
        self.written_at = -math.inf

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()
        self.bar = progress_bar(
            total=epoch_budget(self.state, self.config) * self.steps_per_epoch,
            initial=self.state.epochs_done * self.steps_per_epoch,
            desc="training",
            unit="step",
            enabled=self.progress,
            dynamic_ncols=True,
        )

    def on_train_batch_begin(self, batch, logs=None):
        if self.config.schedule == "cosine":
            step = self.state.epochs_done * self.steps_per_epoch + batch
            self.model.optimizer.learning_rate.assign(
                cosine_learning_rate(
                    self.config, step, self.steps_per_epoch, epoch_budget(self.state, self.config)
                )
            )

    def on_train_batch_end(self, batch, logs=None):
        if self.bar is not None:
            self.bar.update(1)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        # With an average of the weights (config.ema) the average is validated and becomes the
        # best checkpoint; the raw weights come back before the last checkpoint (for resume).
        raw_weights = self.model.get_weights()
        if self.config.ema:
            self.model.optimizer.finalize_variable_values(self.model.trainable_variables)
        scores = self.validate()
        logs.update(scores)
        # From here to the end the epoch is recorded as one unit: a Ctrl-C waits until the
        # snapshot (and the files, when written) are of the same epoch.
        with interrupts_deferred():
            elapsed = self.elapsed_before + time.perf_counter() - self.started
            lr = float(ops.convert_to_numpy(self.model.optimizer.learning_rate))
            row = {"epoch": epoch + 1, "loss": float(logs.get("loss", math.nan))}
            row.update(scores, lr=lr, elapsed_s=round(elapsed, 3))
            self.history.append(row)
            budget = epoch_budget(self.state, self.config)
            verdict = judge_epoch(self.state, self.history, self.config, self.steps_per_epoch)
            self.state = verdict.state
            if epoch_budget(self.state, self.config) < budget:
                self.budget_fitted(budget)
            best_weights = self.snapshot.best_weights if self.snapshot else None
            if verdict.new_best:  # the average when config.ema, else the raw weights
                best_weights = self.model.get_weights() if self.config.ema else raw_weights
            if self.config.ema:
                self.model.set_weights(raw_weights)
            if verdict.learning_rate is not None:
                self.model.optimizer.learning_rate.assign(verdict.learning_rate)
            if verdict.stop_reason:
                self.model.stop_training = True
            if verdict.state.stuck:  # on the blank plateau after a fair share of the budget
                self.warn_not_learning(epoch + 1)
            optimizer = [ops.convert_to_numpy(v) for v in self.model.optimizer.variables]
            self.snapshot = _Snapshot(raw_weights, optimizer, self.state, best_weights)
            # The first epoch of this process is written at once (written_at is -inf).
            waited = time.monotonic() - self.written_at
            if verdict.stop_reason or waited >= CHECKPOINT_INTERVAL_S:
                self.write_checkpoints(restore=False)
            if self.bar is not None:
                self.bar.set_postfix(
                    loss=f"{row['loss']:.3f}", val_cer=f"{row['val_cer']:.4f}", refresh=False
                )
            log.info(
                "epoch %d/%d  loss %.4f  val_loss %.4f  val_cer %.4f  val_wer %.4f  lr %.2e%s",
                epoch + 1,
                epoch_budget(self.state, self.config),
                row["loss"],
                row["val_loss"],
                row["val_cer"],
                row["val_wer"],
                lr,
                "  *best*" if verdict.new_best else "",
            )

    def write_checkpoints(self, restore: bool = True) -> RunState | None:
        """Write the run's files as of the last complete epoch: the best checkpoint when it
        moved, the last one with its optimizer state, history and state. ``restore``: first
        put that epoch's weights and optimizer state back (after a Ctrl-C mid-epoch the model
        has moved on). Returns that epoch's state; None when there is nothing unwritten."""
        snapshot = self.snapshot
        if snapshot is None:
            return None
        with interrupts_deferred():
            if restore:
                self.model.set_weights(snapshot.weights)
                for variable, value in zip(self.model.optimizer.variables, snapshot.optimizer):
                    variable.assign(value)
            if snapshot.best_weights is not None:
                self.model.set_weights(snapshot.best_weights)
                save_model_atomic(self.model, self.run_dir / BEST_MODEL)
                self.model.set_weights(snapshot.weights)
            save_model_atomic(self.model, self.run_dir / LAST_MODEL)
            write_history(self.run_dir / HISTORY_FILE, self.history[: snapshot.state.epochs_done])
            snapshot.state.save(self.run_dir)
            self.written_at = time.monotonic()
            self.snapshot = None
        return snapshot.state

    def budget_fitted(self, budget: int) -> None:
        """Say so when the epoch budget shrinks to end within the time limit (the first time,
        or by more than an epoch), and show it on the progress bar."""
        fitted = epoch_budget(self.state, self.config)
        if budget == self.config.epochs or budget - fitted > 1:
            log.info(
                "at %.1f s an epoch the budget of %d epochs would overrun the time limit of %g s: "
                "fitted to %d epochs (the learning-rate schedule with it; --time-limit sets it)",
                seconds_per_epoch(self.history),
                budget,
                self.config.time_limit,
                fitted,
            )
        if self.bar is not None:
            self.bar.total = fitted * self.steps_per_epoch

    def patience_epochs(self) -> int:
        """Early-stopping patience in epochs (see :func:`captcha_ocr.epochs.patience_epochs`)."""
        return patience_epochs(self.config.patience, self.steps_per_epoch)

    def warn_not_learning(self, epochs_done: int) -> None:
        """Say so, once, when the run is stuck on the blank plateau (see ``plateau``)."""
        if self.warned:
            return
        self.warned = True
        log.warning(
            "not learning: after %d epochs no validation captcha is read right and the training "
            "loss has stopped falling (the CTC blank plateau). Likely causes: labels that do not "
            "match the images (check with `captcha-ocr inspect DATA`, set --label-pattern), too "
            "few images, a hard style (start from the base model: leave --init out, or try "
            "--pretrain synth), an input size too small for the "
            "text (--height/--width), or a learning rate too high or too low (--lr).",
            epochs_done,
        )

    def on_train_end(self, logs=None):
        self.write_checkpoints()  # an epoch still unwritten (training ended by an error)
        if self.bar is not None:
            self.bar.close()

    def validate(self) -> dict[str, float]:
        """``val_loss``, ``val_cer``, ``val_wer`` and ``val_acc`` (the share of captchas read
        exactly right) on the validation split, with greedy decoding."""
        images = self.data.val_images.astype(np.float32)
        if self.model.distribute_strategy.num_replicas_in_sync > 1:
            log_probs = self.model.predict(images, batch_size=VALIDATION_BATCH, verbose=0)
        else:
            # The compiled one-batch call, and the loss in NumPy: predict() and an eager CTC
            # loss took 0.35 s an epoch here whatever the size, more than a small set's steps.
            log_probs = np.concatenate([
                ops.convert_to_numpy(self.model.predict_on_batch(images[k : k + VALIDATION_BATCH]))
                for k in range(0, len(images), VALIDATION_BATCH)
            ])  # fmt: skip
        loss = float(np.mean(ctc_loss(log_probs, self.data.val_labels)))
        texts = [self.charset.decode(classes) for classes, _ in greedy_decode_batch(log_probs)]
        cer, wer = error_rates(self.val_texts, texts)
        right = sum(label == text for label, text in zip(self.val_texts, texts))
        acc = right / max(1, len(texts))
        return {"val_loss": loss, "val_cer": cer, "val_wer": wer, "val_acc": acc}


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold back SIGINT (Ctrl-C) inside the block and raise it as KeyboardInterrupt after.

    A process that inherited SIGINT as ignored (``nohup``, a background job of a
    non-interactive shell) keeps ignoring it here too: it is not meant to be stopped by it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


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
        for epoch in range(state.epochs_done, config.epochs):
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
