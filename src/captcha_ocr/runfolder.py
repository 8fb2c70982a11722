"""The run folder: every file a training run writes, its state, history and curves. No Keras.

A run folder ``RUNS_DIR/<YYYYmmdd-HHMMSS>/`` holds::

    configs.yaml   model spec + training config + data source (rebuilds and resumes the run)
    train.csv val.csv   the split
    model.keras    best checkpoint by validation CER (ties: the later epoch, or lower loss)
    last.keras     last epoch, with optimizer state (for --resume)
    state.json     epoch counters, best scores, elapsed time (for --resume)
    history.csv    one row per epoch
    logs/          TensorBoard
    curves.png     loss, CER and WER per epoch
    model.onnx     the exported reader (``captcha-ocr export``)
    model.int8.onnx   its int8 quantization, when kept (``export --int8``)
    suspect_labels.csv suspect_labels.png   images read differently from their labels (suspects)
    pseudo_labels.csv  the labels + this run's reads the next self-training round trains on
    pretrain/      the ``--pretrain synth`` run: the same files, for the synthetic captchas
    stuck-attempt/ a first attempt that sat on the CTC blank plateau, when the run restarted

and ``RUNS_DIR/latest`` links to the newest run. A new file of a run gets its name here.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.files import atomic_path, write_text_atomic

log = logging.getLogger(__name__)

CONFIG_FILE = "configs.yaml"
TRAIN_CSV = "train.csv"
VAL_CSV = "val.csv"
BEST_MODEL = "model.keras"
LAST_MODEL = "last.keras"
STATE_FILE = "state.json"
HISTORY_FILE = "history.csv"
CURVES_FILE = "curves.png"
LOGS_DIR = "logs"
PRETRAIN_DIR = "pretrain"
STUCK_ATTEMPT_DIR = "stuck-attempt"  # a run's first attempt, when it sat on the blank plateau
ONNX_FILE = "model.onnx"
INT8_ONNX_FILE = "model.int8.onnx"
SUSPECTS_CSV = "suspect_labels.csv"  # training/validation images the model reads otherwise
SUSPECTS_GRID = "suspect_labels.png"  # the first of them, with label and read
PSEUDO_CSV = "pseudo_labels.csv"  # train --unlabeled: the next round's labels, from this run
LATEST_LINK = "latest"

# val_acc (the share of validation captchas read exactly right) came last; older
# history.csv files lack it and read back with it filled in from val_wer (1 - val_wer).
HISTORY_COLUMNS = ["epoch", "loss", "val_loss", "val_cer", "val_wer", "val_acc", "lr", "elapsed_s"]

INTERRUPTED = "interrupted"  # how a stop_reason of an interrupted run begins


@dataclass
class RunState:
    """Counters that must survive an interruption, saved as ``state.json`` each epoch."""

    epochs_done: int = 0
    best_epoch: int = 0  # the epoch of model.keras
    record_epoch: int = 0  # the last epoch that set a (CER, loss) record (patience counts from it)
    record_cer: float = math.inf
    record_loss: float = math.inf
    best_cer: float = math.inf
    best_loss: float = math.inf
    plateau_wait: int = 0
    elapsed_s: float = 0.0
    stop_reason: str = ""
    augment_from: int = -1  # first epoch (0-based) trained with augmentation; -1: not yet
    # The epoch budget once fitted to the time limit, extended or shortened; 0: config.epochs.
    epochs_fitted: int = 0
    epochs_extended: int = 0  # epochs added because validation still improved (epochs.extension)
    saturated_at: int = 0  # the epoch whose validation was found saturated (epochs.shortening)
    stuck: bool = False  # the run sat on the CTC blank plateau for a fair share of its budget

    @property
    def interrupted(self) -> bool:
        """True when Ctrl-C ended the run (it can be resumed)."""
        return self.stop_reason.startswith(INTERRUPTED)

    @property
    def finished(self) -> bool:
        """True when the run ended by a rule (budget, early stop, time limit), not Ctrl-C."""
        return bool(self.stop_reason) and not self.interrupted

    def save(self, run_dir: Path) -> None:
        write_text_atomic(run_dir / STATE_FILE, json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, run_dir: Path) -> RunState:
        path = run_dir / STATE_FILE
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text())
            if isinstance(data, dict) and "improved_epoch" in data:  # the name older runs wrote
                data.setdefault("record_epoch", data.pop("improved_epoch"))
            state = cls(**data)
        except (json.JSONDecodeError, TypeError, UnicodeDecodeError):
            state = None
        kinds = {"int": int, "float": (int, float), "str": str, "bool": bool}
        if state is None or not all(
            isinstance(getattr(state, f.name), kinds[f.type])
            and (f.type == "bool" or not isinstance(getattr(state, f.name), bool))
            for f in dataclasses.fields(cls)
        ):
            raise CaptchaOCRError(
                f"{path} is damaged; cannot resume this run (train a new one, or export what "
                "it has: captcha-ocr export RUN_DIR)"
            )
        return state


def write_history(path: Path, history: Sequence[Mapping[str, float]]) -> None:
    """Write the per-epoch rows as ``history.csv`` (atomically)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_text_atomic(path, buffer.getvalue())


def read_history(path: Path) -> list[dict[str, float]]:
    """The rows of ``history.csv`` (none if absent); a file written before ``val_acc``
    existed reads with ``val_acc`` = 1 - ``val_wer`` (the same quantity)."""
    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
        for row in rows:
            row["epoch"] = int(row["epoch"])
            row.setdefault("val_acc", 1.0 - row["val_wer"])
    except (ValueError, TypeError, KeyError, csv.Error, UnicodeDecodeError):
        raise CaptchaOCRError(
            f"{path} is damaged; delete it to resume without the earlier epochs' history"
        ) from None
    return rows


def plot_curves(history: Sequence[Mapping[str, float]], path: Path) -> None:
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
    link = run_dir.parent / LATEST_LINK
    tmp = run_dir.parent / f".{LATEST_LINK}.{os.getpid()}"
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
