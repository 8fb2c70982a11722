"""Training: data -> run folder with the best checkpoint, history, curves and TensorBoard logs.

The network (``model``) knows nothing of the loss; here live the CTC loss, the input feed
(in-memory pixels, augmented by worker threads ahead of the model), the per-epoch validation
CER/WER, checkpointing, early stopping, learning-rate schedules, synthetic pre-training,
resume and Ctrl-C handling.

A run folder ``RUNS_DIR/<YYYYmmdd-HHMMSS>/`` holds::

    configs.yaml   model spec + training config + data source (rebuilds and resumes the run)
    train.csv val.csv   the split
    model.keras    best checkpoint by validation CER (ties: the later epoch, or lower loss)
    last.keras     last epoch, with optimizer state (for --resume)
    state.json     epoch counters, best scores, elapsed time (for --resume)
    history.csv    one row per epoch
    logs/          TensorBoard
    curves.png     loss, CER and WER per epoch
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import csv
import dataclasses
import io
import itertools
import json
import logging
import math
import os
import shutil
import signal
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter

import keras
import numpy as np
from keras import ops

from captcha_ocr.augment import augment_batch
from captcha_ocr.charset import Charset, ctc_steps_needed
from captcha_ocr.config import (
    CONFIG_FILE,
    ModelSpec,
    TrainConfig,
    load_run_config,
    save_run_config,
    validate_train_config,
)
from captcha_ocr.data import (
    Sample,
    find_samples,
    load_samples,
    model_input_size,
    most_common_size,
    read_labels_file,
    split_samples,
    write_samples_csv,
)
from captcha_ocr.decode import greedy_decode_batch
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.files import atomic_path, write_text_atomic
from captcha_ocr.metrics import error_rates
from captcha_ocr.model import build_model, time_steps

log = logging.getLogger(__name__)

BEST_MODEL = "model.keras"
LAST_MODEL = "last.keras"
STATE_FILE = "state.json"
HISTORY_FILE = "history.csv"
HISTORY_COLUMNS = ["epoch", "loss", "val_loss", "val_cer", "val_wer", "lr", "elapsed_s"]


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
class RunState:
    """Counters that must survive an interruption, saved as ``state.json`` each epoch."""

    epochs_done: int = 0
    best_epoch: int = 0  # the epoch of model.keras
    improved_epoch: int = 0  # the last epoch that set a (CER, loss) record (for patience)
    record_cer: float = math.inf
    record_loss: float = math.inf
    best_cer: float = math.inf
    best_loss: float = math.inf
    plateau_wait: int = 0
    elapsed_s: float = 0.0
    stop_reason: str = ""

    def save(self, run_dir: Path) -> None:
        write_text_atomic(run_dir / STATE_FILE, json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, run_dir: Path) -> RunState:
        path = run_dir / STATE_FILE
        if not path.is_file():
            return cls()
        try:
            state = cls(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError, UnicodeDecodeError):
            state = None
        kinds = {"int": int, "float": (int, float), "str": str}
        if state is None or not all(
            isinstance(getattr(state, f.name), kinds[f.type])
            and not isinstance(getattr(state, f.name), bool)
            for f in dataclasses.fields(cls)
        ):
            raise CaptchaOCRError(
                f"{path} is damaged; cannot resume this run (train a new one, or export what "
                "it has: captcha-ocr export RUN_DIR)"
            )
        return state


@dataclass
class TrainResult:
    """What a training run produced."""

    run_dir: Path
    spec: ModelSpec
    config: TrainConfig
    state: RunState
    history: list[dict[str, float]] = field(default_factory=list)

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


def measure_spec(samples: list[Sample], config: TrainConfig) -> ModelSpec:
    """Charset, input size and channels from the data and the config."""
    charset = Charset.from_labels(s.label for s in samples)
    width, height = config.width, config.height
    if width is None or height is None:  # else no need to read any image header
        width, height = model_input_size(most_common_size(samples), width, height, config.preset)
    return ModelSpec(
        preset=config.preset,
        charset=charset.chars,
        height=int(height),
        width=int(width),
        channels=config.channels or 1,
        max_label_length=max(len(s.label) for s in samples),
    )


# The default budget: about AUTO_EPOCHS epochs, but never fewer than AUTO_STEPS_RANGE[0]
# optimizer steps (small sets get more epochs) nor more than AUTO_STEPS_RANGE[1] (huge sets
# get fewer), within AUTO_EPOCHS_RANGE. Measured: on the 936-image reference training split
# 1,800 steps (63 epochs) is past the point where validation CER stops improving; on
# 1,800-image synthetic styles 66 epochs beat 33 by 2 to 4 points of accuracy.
AUTO_EPOCHS = 60
AUTO_STEPS_RANGE = (1800, 20_000)
AUTO_EPOCHS_RANGE = (15, 2000)

# CTC first sits on the blank plateau (validation CER ~1) while its validation loss may rise;
# 180 real images left it after 270 steps (54 epochs) here. Early stopping waits until a
# run has left it (best CER below PLATEAU_CER), and its patience is never under
# PATIENCE_MIN_STEPS steps, or small sets stop just before they start to learn.
PLATEAU_CER = 0.95
PATIENCE_MIN_STEPS = 400


def batches_per_epoch(train_images: int, batch_size: int) -> int:
    """Full batches in one pass over ``train_images`` (a set smaller than a batch is one).

    >>> batches_per_epoch(936, 32), batches_per_epoch(20, 32), batches_per_epoch(0, 32)
    (29, 1, 1)
    """
    return max(1, train_images // max(1, min(batch_size, train_images)))


def auto_epochs(train_images: int, batch_size: int) -> int:
    """The default epoch budget for ``train_images`` images (see :data:`AUTO_EPOCHS`).

    >>> auto_epochs(936, 32), auto_epochs(180, 32), auto_epochs(1800, 32), auto_epochs(100_000, 32)
    (63, 360, 60, 15)
    """
    per_epoch = batches_per_epoch(train_images, batch_size)
    steps = min(max(AUTO_EPOCHS * per_epoch, AUTO_STEPS_RANGE[0]), AUTO_STEPS_RANGE[1])
    low, high = AUTO_EPOCHS_RANGE
    return int(min(high, max(low, math.ceil(steps / per_epoch))))


def check_labels_fit(samples: list[Sample], steps: int, spec: ModelSpec) -> None:
    """Every label must fit in the model's CTC time steps; say which one does not."""
    worst = max(samples, key=lambda s: ctc_steps_needed(s.label))
    if ctc_steps_needed(worst.label) > steps:
        raise CaptchaOCRError(
            f"label {worst.label!r} ({worst.path}) needs {ctc_steps_needed(worst.label)} CTC steps, "
            f"but preset {spec.preset!r} at width {spec.width} gives {steps}; "
            f"use a larger --width or a shorter label"
        )
    empty = [s for s in samples if not s.label]
    if empty:
        raise CaptchaOCRError(f"{len(empty)} image(s) have an empty label, e.g. {empty[0].path}")


def warn_about_spaces(samples: list[Sample]) -> None:
    """Spaces in labels are allowed, but most often come from copies a file manager named
    (``2b827 (1).png``, ``2b827 - Copy.png``): say so before the model learns ' ' and '('."""
    spaced = [s for s in samples if any(c.isspace() for c in s.label)]
    if spaced:
        log.warning(
            "%d label(s) contain spaces, e.g. %r (%s): the model will learn to read spaces; "
            "if these are copies like 'name (1).png', rename them or set --label-pattern",
            len(spaced),
            spaced[0].label,
            Path(spaced[0].path).name,
        )


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
    data: PreparedData, config: TrainConfig, start_epoch: int, steps_per_epoch: int, depth: int = 6
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Augmented training batches ``(x (B, H, W, C) float32, y (B, L) int32)``, made ``depth``
    batches ahead by two worker threads (NumPy and Pillow release the GIL), so the model
    never waits on data.

    Batch ``k`` of epoch ``e`` depends only on ``(seed, e, k)``: a seeded shuffle per epoch and
    a generator per batch, so a resumed run sees the same data as an uninterrupted one.

    (A tf.data pipeline calling this through ``tf.numpy_function`` deadlocked here at
    iterator teardown in TF 2.21 (the GIL against a tf.data worker), so the feed is plain
    threads.)
    """
    images, labels = data.train_images, data.train_labels
    n, batch_size = len(images), min(config.batch_size, len(images))

    def make_batch(epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        order = np.random.default_rng([config.seed, epoch]).permutation(n)
        chosen = order[index * batch_size : (index + 1) * batch_size]
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
    """Validation CER/WER/loss after every epoch, then the run's bookkeeping: best checkpoint,
    last checkpoint + state (for resume), history.csv, early stopping, reduce-on-plateau,
    the time limit and a progress bar. It runs first, so later callbacks (TensorBoard) see
    ``val_cer`` in the logs."""

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

    def on_train_begin(self, logs=None):
        from tqdm import tqdm

        self.started = time.perf_counter()
        self.bar = tqdm(
            total=self.config.epochs * self.steps_per_epoch,
            initial=self.state.epochs_done * self.steps_per_epoch,
            desc="training",
            unit="step",
            disable=not self.progress,
            dynamic_ncols=True,
        )

    def on_train_batch_begin(self, batch, logs=None):
        if self.config.schedule == "cosine":
            step = self.state.epochs_done * self.steps_per_epoch + batch
            self.model.optimizer.learning_rate.assign(
                cosine_learning_rate(self.config, step, self.steps_per_epoch)
            )

    def on_train_batch_end(self, batch, logs=None):
        if self.bar is not None:
            self.bar.update(1)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        val_loss, val_cer, val_wer = self.validate()
        logs.update(val_loss=val_loss, val_cer=val_cer, val_wer=val_wer)
        # From here to the end the epoch's files are written as one unit: a Ctrl-C waits
        # until they are consistent (checkpoint, history and state of the same epoch).
        with interrupts_deferred():
            state = self.state
            state.epochs_done = epoch + 1
            state.elapsed_s = self.elapsed_before + time.perf_counter() - self.started
            lr = float(ops.convert_to_numpy(self.model.optimizer.learning_rate))
            row = {
                "epoch": epoch + 1,
                "loss": float(logs.get("loss", math.nan)),
                "val_loss": val_loss,
                "val_cer": val_cer,
                "val_wer": val_wer,
                "lr": lr,
                "elapsed_s": round(state.elapsed_s, 3),
            }
            self.history.append(row)

            # The checkpoint moves to a later epoch of equal CER when prefer_later is set: on a
            # small validation set CER ties are common, and under a decaying learning rate the
            # later weights are better.
            # Patience and the plateau schedule count epochs without a better (CER, loss) pair:
            # once CER is 0 a falling loss is still progress.
            better = (val_cer, val_loss) < (state.record_cer, state.record_loss)
            tie = val_cer == state.best_cer
            improved = val_cer < state.best_cer or (
                tie and (self.config.prefer_later or val_loss < state.best_loss)
            )
            if improved:
                state.best_cer, state.best_loss, state.best_epoch = val_cer, val_loss, epoch + 1
                save_model_atomic(self.model, self.run_dir / BEST_MODEL)
            if better:
                state.record_cer, state.record_loss = val_cer, val_loss
                state.improved_epoch = epoch + 1
                state.plateau_wait = 0
            else:
                state.plateau_wait += 1
                if (
                    self.config.schedule == "plateau"
                    and state.plateau_wait >= self.config.plateau_patience
                ):
                    self.model.optimizer.learning_rate.assign(lr * self.config.plateau_factor)
                    state.plateau_wait = 0
            patience = self.patience_epochs()
            if state.best_cer < PLATEAU_CER and epoch + 1 - state.improved_epoch >= patience:
                state.stop_reason = f"early stop: no better validation CER for {patience} epochs"
            elif self.config.time_limit and state.elapsed_s >= self.config.time_limit:
                state.stop_reason = f"time limit of {self.config.time_limit:g} s reached"
            elif epoch + 1 >= self.config.epochs:
                state.stop_reason = f"epoch budget of {self.config.epochs} done"
            if state.stop_reason:
                self.model.stop_training = True
            self.warn_if_not_learning(epoch + 1)

            save_model_atomic(self.model, self.run_dir / LAST_MODEL)
            write_history(self.run_dir / HISTORY_FILE, self.history)
            state.save(self.run_dir)
            message = (
                f"epoch {epoch + 1}/{self.config.epochs}  loss {row['loss']:.4f}  val_loss {val_loss:.4f}  "
                f"val_cer {val_cer:.4f}  val_wer {val_wer:.4f}  lr {lr:.2e}{'  *best*' if improved else ''}"
            )
            if self.bar is not None:
                self.bar.set_postfix(
                    loss=f"{row['loss']:.3f}", val_cer=f"{val_cer:.4f}", refresh=False
                )
            log.info(message)

    def patience_epochs(self) -> int:
        """Early-stopping patience: ``config.patience`` epochs, but at least
        :data:`PATIENCE_MIN_STEPS` optimizer steps (40 epochs of 5 steps are too few)."""
        return max(self.config.patience, math.ceil(PATIENCE_MIN_STEPS / self.steps_per_epoch))

    def warn_if_not_learning(self, epochs_done: int) -> None:
        """Say so, once, when validation CER is still near 1 after a fair share of the budget."""
        patience = max(10, self.config.epochs // 4)
        if self.warned or epochs_done < patience or self.state.best_cer < PLATEAU_CER:
            return
        self.warned = True
        log.warning(
            "not learning yet: validation CER is still %.2f after %d epochs. Likely causes: labels that "
            "do not match the images (check with `captcha-ocr inspect DATA`, set --label-pattern), too "
            "few images (try --pretrain synth), an input size too small for the text (--height/--width), "
            "or a learning rate too high or too low (--lr).",
            self.state.best_cer,
            epochs_done,
        )

    def on_train_end(self, logs=None):
        if self.bar is not None:
            self.bar.close()

    def validate(self) -> tuple[float, float, float]:
        """Loss, CER and WER on the validation split, with greedy decoding."""
        log_probs = self.model.predict(
            self.data.val_images.astype(np.float32), batch_size=256, verbose=0
        )
        loss = float(np.mean(ops.convert_to_numpy(CTCLoss().call(self.data.val_labels, log_probs))))
        texts = [self.charset.decode(classes) for classes, _ in greedy_decode_batch(log_probs)]
        cer, wer = error_rates(self.val_texts, texts)
        return loss, cer, wer


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


def cosine_learning_rate(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up to ``learning_rate``, then cosine decay to 1 % of it at the budget's end."""
    total = max(1, config.epochs * steps_per_epoch)
    warmup = min(total - 1, int(config.warmup_epochs * steps_per_epoch))
    peak = config.learning_rate
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def save_model_atomic(model: keras.Model, path: Path) -> None:
    """Save a ``.keras`` file so that a crash mid-save leaves the previous one intact."""
    with atomic_path(path) as tmp:
        model.save(tmp)


def write_history(path: Path, history: list[dict[str, float]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_text_atomic(path, buffer.getvalue())


def read_history(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
        for row in rows:
            row["epoch"] = int(row["epoch"])
    except (ValueError, TypeError, KeyError, csv.Error, UnicodeDecodeError):
        raise CaptchaOCRError(
            f"{path} is damaged; delete it to resume without the earlier epochs' history"
        ) from None
    return rows


def plot_curves(history: list[dict[str, float]], path: Path) -> None:
    """Loss, CER and WER per epoch as ``curves.png``."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, [r["loss"] for r in history], label="train")
    axes[0].plot(epochs, [r["val_loss"] for r in history], label="validation")
    axes[0].set_title("CTC loss")
    axes[0].set_yscale("log")
    axes[0].legend()
    for axis, key, title in (
        (axes[1], "val_cer", "validation CER"),
        (axes[2], "val_wer", "validation WER"),
    ):
        axis.plot(epochs, [max(r[key], 1e-4) for r in history], color="tab:orange")
        axis.set_yscale("log")
        axis.set_title(title)
    for axis in axes:
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def new_run_dir(out: Path) -> Path:
    """``out/<YYYYmmdd-HHMMSS>``, made unique if two runs start in the same second."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir, k = out / stamp, 1
    while run_dir.exists():
        run_dir, k = out / f"{stamp}-{k}", k + 1
    return run_dir


def point_latest(run_dir: Path) -> None:
    """Make ``RUNS_DIR/latest`` a link to ``run_dir`` (replaced atomically)."""
    link = run_dir.parent / "latest"
    tmp = run_dir.parent / f".latest.{os.getpid()}"
    try:
        if tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(run_dir.name, target_is_directory=True)
        os.replace(tmp, link)
    except OSError as error:  # some file systems have no links; the run is still fine
        log.debug("could not link %s: %s", link, error)


def check_writable(folder: Path, need_bytes: int = 50_000_000) -> None:
    """Fail before training when the run folder cannot be written or the disk is full."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        raise CaptchaOCRError(
            f"cannot write to {folder}: {error.strerror or error}; choose another --out"
        ) from None
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise CaptchaOCRError(
            f"only {free / 1e6:.0f} MB free under {folder}; training needs about "
            f"{need_bytes / 1e6:.0f} MB: free some space or choose another --out"
        )


def train(
    data: str | Path | None,
    out: str | Path = "runs",
    config: TrainConfig | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
    resume_epochs: int | None = None,
    resume_devices: int | None = None,
) -> TrainResult:
    """Train a reader; returns when the budget, early stopping, the time limit or Ctrl-C ends it.

    ``data`` is a folder of labeled images or a ``path,label`` CSV. With ``resume`` (a run
    folder), training continues where it stopped, with the run's own config and split;
    ``resume_epochs`` raises (or lowers) its epoch budget, ``resume_devices`` changes the
    number of devices it trains on.
    Export the result with :func:`captcha_ocr.export.export_run`.

    >>> result = train("data/captchas", "runs", TrainConfig(epochs=50))  # doctest: +SKIP
    >>> result.state.best_cer                                             # doctest: +SKIP
    0.004
    """
    if resume is not None:
        run_dir = Path(resume)
        spec, config, data_info = load_run_config(run_dir)
        if resume_epochs is not None:
            config = dataclasses.replace(config, epochs=resume_epochs)
        if resume_devices is not None:
            config = dataclasses.replace(config, devices=resume_devices)
        if resume_epochs is not None or resume_devices is not None:
            validate_train_config(config)
        for name in ("train.csv", "val.csv", LAST_MODEL):
            if not (run_dir / name).is_file():
                raise CaptchaOCRError(f"cannot resume {run_dir}: {name} is missing")
        train_samples = read_labels_file(run_dir / "train.csv")
        val_samples = read_labels_file(run_dir / "val.csv")
        state = RunState.load(run_dir)
        history = read_history(run_dir / HISTORY_FILE)[: state.epochs_done]
        state.stop_reason = ""
        if state.epochs_done >= config.epochs:
            raise CaptchaOCRError(
                f"{run_dir} already ran its {config.epochs} epochs; nothing to resume"
            )
        if resume_epochs is not None or resume_devices is not None:  # only once sure to go on
            save_run_config(run_dir, spec, config, data_info)
        log.info("resuming %s from epoch %d", run_dir, state.epochs_done + 1)
        strategy = distribution_strategy(config.devices)
    else:
        if data is None:
            raise CaptchaOCRError("give a data folder or labels file to train on")
        config = config or TrainConfig()
        samples = find_samples(data, config.label_pattern, config.ignore_case)
        log.info("found %d labeled images in %s", len(samples), data)
        warn_about_spaces(samples)
        spec = measure_spec(samples, config)
        train_samples, val_samples = split_samples(samples, config.val_fraction, config.seed)
        if config.epochs is None:
            config = dataclasses.replace(
                config, epochs=auto_epochs(len(train_samples), config.batch_size)
            )
            log.info(
                "epoch budget: %d (%d optimizer steps)",
                config.epochs,
                config.epochs * batches_per_epoch(len(train_samples), config.batch_size),
            )
        data_info = {"source": str(data), "count": len(samples)}
        state, history = RunState(), []
        strategy = distribution_strategy(config.devices)  # before TensorFlow starts devices
        check_labels_fit(samples, time_steps(build_model(spec)), spec)
        out = Path(out)
        check_writable(out)
        run_dir = new_run_dir(out)
        check_writable(run_dir)
        save_run_config(run_dir, spec, config, data_info)
        write_samples_csv(run_dir / "train.csv", train_samples)
        write_samples_csv(run_dir / "val.csv", val_samples)
        point_latest(run_dir)
    initial_weights = None
    if resume is None and config.pretrain == "synth":
        initial_weights = pretrain_on_synth(
            train_samples, spec, config, run_dir, progress, strategy
        )
    return fit(
        run_dir,
        spec,
        config,
        train_samples,
        val_samples,
        state,
        history,
        progress,
        resume=resume is not None,
        initial_weights=initial_weights,
        strategy=strategy,
    )


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
    with a ``tf.distribute`` ``strategy`` (see :func:`distribution_strategy`), data-parallel."""
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
    with device_scope(strategy):  # variables (weights, optimizer slots) live on every device
        if resume:
            model = load_keras_model(run_dir / LAST_MODEL, compile=True)
        else:
            if initial_weights is not None:
                model.set_weights(initial_weights)
            model.compile(optimizer=make_optimizer(config), loss=CTCLoss())

    steps_in_epoch = batches_per_epoch(len(prepared.train_images), config.batch_size)
    monitor = EpochMonitor(prepared, config, run_dir, state, history, steps_in_epoch, progress)
    tensorboard = keras.callbacks.TensorBoard(log_dir=str(run_dir / "logs"), write_graph=False)
    callbacks = keras.callbacks.CallbackList([monitor, tensorboard], model=model)
    log.info("training in %s (Ctrl-C stops cleanly and keeps the best model)", run_dir)
    batches = training_batches(prepared, config, state.epochs_done, steps_in_epoch)
    callbacks.on_train_begin()
    try:
        for epoch in range(state.epochs_done, config.epochs):
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
    except KeyboardInterrupt:
        # The files on disk are consistent as of the last finished epoch; so is this state.
        state = RunState.load(run_dir)
        del history[state.epochs_done :]
        state.stop_reason = f"interrupted after {state.epochs_done} complete epoch(s)"
        state.save(run_dir)
        log.warning(
            "interrupted: keeping the best checkpoint of %d complete epoch(s)", state.epochs_done
        )
    finally:
        batches.close()
        callbacks.on_train_end()
    if not (run_dir / BEST_MODEL).is_file():
        raise CaptchaOCRError(
            f"training stopped before the first epoch ended; nothing to keep in {run_dir}"
        )
    plot_curves(history, run_dir / "curves.png")
    log.info(
        "%s; best epoch %d: val_cer %.4f, val_wer %.4f (%.0f s)",
        state.stop_reason,
        state.best_epoch,
        state.best_cer,
        next((r["val_wer"] for r in history if r["epoch"] == state.best_epoch), math.nan),
        state.elapsed_s,
    )
    return TrainResult(run_dir, spec, config, state, history)


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
    if strategy is None:
        return float(model.train_on_batch(x, y))
    if model.train_function is None:
        with strategy.scope():
            model.optimizer.build(model.trainable_variables)  # its slots mirrored too
        model.make_train_function()
    model.reset_metrics()  # report this batch's loss, not a running mean
    logs = model.train_function(iter([(split_batch(strategy, x), split_batch(strategy, y), None)]))
    return float(ops.convert_to_numpy(logs["loss"]))


def split_batch(strategy, array: np.ndarray):
    """``array`` as per-device values: device k gets the k-th contiguous share of the rows."""
    import tensorflow as tf

    shares = np.array_split(array, strategy.num_replicas_in_sync)
    devices = strategy.extended.worker_devices

    def on_device(context) -> tf.Tensor:  # copied once, straight to the device that uses it
        with tf.device(devices[context.replica_id_in_sync_group]):
            return tf.convert_to_tensor(shares[context.replica_id_in_sync_group])

    return strategy.experimental_distribute_values_from_function(on_device)


def pretrain_on_synth(
    samples: list[Sample],
    spec: ModelSpec,
    config: TrainConfig,
    run_dir: Path,
    progress: bool,
    strategy=None,
) -> list[np.ndarray]:
    """Pre-train on generated captchas that imitate ``samples`` (charset, label lengths, size,
    colours); returns the weights of the best pre-training epoch. The pre-training run is
    kept in ``run_dir/pretrain`` (checkpoints, history, curves), its images are not."""
    import tempfile

    from captcha_ocr.data import estimate_colours, synth_safe_chars, synthesize

    lengths = (min(len(s.label) for s in samples), max(len(s.label) for s in samples))
    chars = synth_safe_chars(spec.charset)
    if not chars:
        raise CaptchaOCRError("--pretrain synth cannot draw any of this data set's characters")
    colours = estimate_colours(samples[:64])
    # Drawn at the data's own size, so that both go through the same resize to the input.
    size = most_common_size(samples)
    pre_config = dataclasses.replace(
        config,
        pretrain=None,
        epochs=config.pretrain_epochs,
        patience=config.pretrain_epochs,
        time_limit=None,
    )
    log.info(
        "pre-training on %d synthetic captchas (%s, lengths %d-%d, %dx%d) for %d epochs",
        config.pretrain_images,
        chars,
        *lengths,
        *size,
        pre_config.epochs,
    )
    with tempfile.TemporaryDirectory(prefix="captcha-ocr-synth-") as tmp:
        synth = synthesize(
            tmp,
            config.pretrain_images,
            chars,
            lengths,
            size,
            seed=config.seed,
            progress=progress,
            colours=colours,
        )
        synth_train, synth_val = split_samples(synth, 0.05, config.seed)
        folder = run_dir / "pretrain"
        folder.mkdir(parents=True, exist_ok=True)
        fit(
            folder, spec, pre_config, synth_train, synth_val, RunState(), [], progress,
            strategy=strategy,
        )  # fmt: skip
    best = load_keras_model(folder / BEST_MODEL)
    log.info("pre-training done; fine-tuning on the real images")
    return best.get_weights()


def make_optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    """Adam or AdamW with gradient clipping (CTC gradients spike early in training)."""
    if config.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(
            config.learning_rate, weight_decay=config.weight_decay, clipnorm=5.0
        )
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
        return optimizer
    return keras.optimizers.Adam(config.learning_rate, clipnorm=5.0)


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
