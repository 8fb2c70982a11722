"""The per-epoch bookkeeping of a training run (:class:`EpochMonitor`): validation, then what
:func:`captcha_ocr.epochs.judge_epoch` decides (best checkpoint, state, history, learning
rate, stopping), files written at a bounded pace, and Ctrl-C held back while an epoch is
being recorded (:func:`interrupts_deferred`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from captcha_ocr.charset import Charset
from captcha_ocr.config import TrainConfig
from captcha_ocr.decode import ctc_loss, decode_batch
from captcha_ocr.epochs import (
    SATURATED_EPOCHS,
    cosine_learning_rate,
    epoch_budget,
    judge_epoch,
    patience_epochs,
    recent_progress,
    seconds_per_epoch,
)
from captcha_ocr.feed import PreparedData
from captcha_ocr.keras_quiet import keras
from captcha_ocr.metrics import error_rates
from captcha_ocr.model import save_model_atomic
from captcha_ocr.progress import progress_bar
from captcha_ocr.runfolder import BEST_MODEL, HISTORY_FILE, LAST_MODEL, RunState, write_history

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
        self.val_chars = sum(map(len, self.val_texts))  # what the CER is of (epochs.cer_noise)
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
            verdict = judge_epoch(
                self.state,
                self.history,
                self.config,
                self.steps_per_epoch,
                len(self.val_texts),
                self.val_chars,
            )
            self.state = verdict.state
            new_budget = epoch_budget(self.state, self.config)
            if self.state.saturated_at == epoch + 1:
                self.budget_shortened(budget)
            elif new_budget < budget:
                self.budget_fitted(budget)
            elif new_budget > budget:
                self.budget_extended(budget)
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
                new_budget,
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

    def budget_shortened(self, budget: int) -> None:
        """Say so when the budget shrinks because the validation is saturated."""
        shorter = epoch_budget(self.state, self.config)
        log.info(
            "the validation is saturated (lowest CER %.4f, none lower in the last %d epochs): "
            "the budget of %d epochs ends at %d, its learning-rate schedule compressed into them "
            "(--shorten none turns this off)",
            min(row["val_cer"] for row in self.history),
            SATURATED_EPOCHS,
            budget,
            shorter,
        )
        if self.bar is not None:
            self.bar.total = shorter * self.steps_per_epoch

    def budget_extended(self, budget: int) -> None:
        """Say so when the budget grows because validation still improved at its end."""
        grown = epoch_budget(self.state, self.config)
        progress = recent_progress(self.history)
        since = ""
        if progress:
            since = " over the last {} epochs ({:.4f} -> {:.4f})".format(*progress)
        log.info(
            "the validation CER still fell%s: the budget of %d epochs grows by %d to %d, its "
            "learning-rate schedule stretched with it (--extend none turns this off)",
            since,
            budget,
            grown - budget,
            grown,
        )
        if self.bar is not None:
            self.bar.total = grown * self.steps_per_epoch

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
        decoded = decode_batch(log_probs, self.data.spec.label_lengths)  # as the reader reads
        texts = [self.charset.decode(classes) for classes, _ in decoded]
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
