"""The learning loop: training rounds on the labels so far, each in its own process.

A round writes a snapshot of the labels (``round-<k>/labels.csv``, absolute paths) and runs
``python -m captcha_ocr train`` on it in a child process, so the page never waits for it.
The first round starts from ``--model`` (a run folder), or else from the base model the
package ships (``--init base``), or else from ``--pretrain synth``;
later rounds fine-tune from the previous round's run folder (``train --init RUN``). When
the child ends, the round's model reads its validation images (labeled images held back
from its training) for the round's accuracy, and the caller refreshes the suggestions.

Train's exit status decides the round: 0 a usable model; 3 (``NOT_LEARNED_STATUS``) a
model that did not learn, kept and used with a warning (a wrong suggestion costs no more
than none: the label is typed either way, and even a weak model's confidences rank the
queue); anything else a failed round whose error (the end of train's stderr) the page
shows, and labeling goes on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from captcha_ocr.basemodel import BASE_NAME, resolve_base
from captcha_ocr.data import read_labels_file, write_samples_csv
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.evaluate import evaluate
from captcha_ocr.files import write_text_atomic
from captcha_ocr.infer import Reader
from captcha_ocr.label.store import LabelStore
from captcha_ocr.runfolder import BEST_MODEL, LATEST_LINK, ONNX_FILE, VAL_CSV

log = logging.getLogger(__name__)

ROUNDS_DIR = "rounds"  # in the work folder: one round-<k> folder per round
STATE_FILE = "rounds.json"
SNAPSHOT_CSV = "labels.csv"  # in a round's folder: the labels it trains on
STDOUT_FILE = "train.out"
STDERR_FILE = "train.err"
COMMAND_FILE = "command.txt"  # in a round's folder: the train command it ran
RUNS_SUBDIR = "runs"  # in a round's folder: train --out

# train's exit status for a model that did not learn (cli.train_commands.NOT_LEARNED_STATUS;
# written here too because the library must not import the CLI).
NOT_LEARNED_STATUS = 3
# Fewer labels than this make no round: train holds back a tenth for validation, and
# with fewer the round's accuracy is a coin flip on one image.
MIN_ROUND_LABELS = 10
# Round 1 without a --model run: the shipped base model when there is one, else this.
DEFAULT_FIRST_ROUND_ARGS = ("--pretrain", "synth")
ERROR_LINES = 8  # lines of train's stderr a failed round shows


class RoundBusy(CaptchaOCRError):
    """A round cannot start now (one is training, or too few labels): the API answers 409."""


@dataclass
class RoundState:
    """Where the loop stands; saved in the work folder as ``rounds.json``."""

    number: int = 0  # finished rounds
    state: str = "idle"  # "idle" | "training" | "failed"
    error: str = ""  # why the last round failed
    warning: str = ""  # why the latest model is marked not usable ("" when it is usable)
    model: str | None = None  # the run folder of the latest finished round
    accuracy: float | None = None  # its exact accuracy on its validation images
    val_images: int = 0  # how many validation images that accuracy is over
    labels_used: int = 0  # labels the latest finished round trained on (with validation)
    labels_at_start: int = 0  # labels when the latest round started (or failed)
    round_dir: str | None = None  # the folder of the round training now (or the last one)
    pid: int | None = None  # the child process of the round training now
    started: float | None = None  # time.time() when the round training now started
    seconds: float | None = None  # how long the latest finished round took

    def public(self) -> dict:
        """The fields ``GET /v1/status`` shows under ``round``."""
        fields = ("number", "state", "error", "warning", "model", "accuracy", "labels_used")
        shown = {name: getattr(self, name) for name in fields}
        shown.update(val_images=self.val_images, seconds=self.seconds, started=self.started)
        return shown


def train_command(
    snapshot: Path,
    out: Path,
    init: str | None,
    first_round_args: Sequence[str],
    train_args: Sequence[str],
) -> list[str]:
    """The ``captcha-ocr train`` command of a round: from ``init`` (a run folder, with
    ``--init``) when there is one, else with ``first_round_args``; ``train_args`` go to
    every round.

    >>> train_command(Path("r2/labels.csv"), Path("r2/runs"), "r1/runs/x", ["--pretrain", "synth"], [])[3:]
    ['train', 'r2/labels.csv', '--out', 'r2/runs', '--quiet', '--init', 'r1/runs/x']
    """
    start = ["--init", str(init)] if init else list(first_round_args)
    command = [sys.executable, "-m", "captcha_ocr", "train", str(snapshot), "--out", str(out)]
    return [*command, "--quiet", *start, *train_args]


def can_init_from(model: str | None) -> bool:
    """True for a run folder (or ``base``) that ``train --init`` can start from (an ONNX
    file cannot)."""
    if model is None:
        return False
    try:
        return (resolve_base(model) / BEST_MODEL).is_file()
    except CaptchaOCRError:  # "base" in an installation without a base model
        return False


def first_round_start(first_round_args: Sequence[str] | None) -> list[str]:
    """The train flags of round 1 when no ``--model`` run is given: ``first_round_args``;
    by default (None) ``--init base`` where this installation ships a base model, else
    ``--pretrain synth``."""
    if first_round_args is not None:
        return list(first_round_args)
    if can_init_from(BASE_NAME):
        return ["--init", BASE_NAME]
    return list(DEFAULT_FIRST_ROUND_ARGS)


def round_accuracy(reader: Reader, run_dir: Path) -> tuple[float | None, int]:
    """Exact accuracy of a round's model on its validation images, and their count."""
    val_csv = run_dir / VAL_CSV
    if not val_csv.is_file():
        return None, 0
    samples = read_labels_file(val_csv)
    if not samples:
        return None, 0
    return evaluate(reader, samples).accuracy, len(samples)


def run_folder(runs: Path) -> Path:
    """The run folder train made under ``runs`` (its ``latest`` link, or the newest folder
    where the file system has no links)."""
    latest = runs / LATEST_LINK
    if latest.is_dir():
        return latest.resolve()
    folders = sorted(p for p in runs.glob("*") if p.is_dir()) if runs.is_dir() else []
    if not folders:
        raise CaptchaOCRError(f"train ended without making a run folder in {runs}")
    return folders[-1].resolve()


def stderr_tail(path: Path, lines: int = ERROR_LINES) -> str:
    """The last non-empty lines of a round's stderr (progress bars' carriage returns cut)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    kept = [line.rsplit("\r", 1)[-1].rstrip() for line in text.splitlines()]
    return "\n".join([line for line in kept if line][-lines:])


class Rounds:
    """Starts rounds, watches them in a thread, and keeps :class:`RoundState` on disk.

    ``on_model(reader, run_dir)`` is called (in the watching thread) after each finished
    round, to refresh the suggestions.
    """

    def __init__(
        self,
        work_dir: Path,
        store: LabelStore,
        on_model: Callable[[Reader, str], None],
        round_size: int = 50,
        init_model: str | None = None,
        first_round_args: Sequence[str] | None = None,
        train_args: Sequence[str] = (),
    ) -> None:
        if round_size < 1:
            raise CaptchaOCRError(f"--round-size must be >= 1 (got {round_size})")
        self.work_dir = work_dir.absolute()  # the child's paths must not depend on its cwd
        self.store = store
        self.on_model = on_model
        self.round_size = round_size
        self.init_model = init_model
        self.first_round_args = first_round_start(first_round_args)
        self.train_args = list(train_args)
        self._lock = threading.RLock()
        self._process: subprocess.Popen | None = None
        self._closing = False
        self._watcher: threading.Thread | None = None  # the thread that waits on a round
        self.state = self._load_state()

    # -- state -----------------------------------------------------------------------------

    def _load_state(self) -> RoundState:
        path = self.work_dir / STATE_FILE
        if not path.is_file():
            return RoundState()
        try:
            state = RoundState(**json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as error:
            raise CaptchaOCRError(
                f"{path} is damaged ({error}); move it away to start the rounds afresh"
            ) from None
        if state.state == "training":  # the app stopped (or was killed) during a round
            _stop_leftover(state)
            state.error = (
                "the app stopped while this round trained; it starts again with the next "
                "labels, or with 'train now'"
            )
            state.state, state.pid, state.started = "failed", None, None
            state.labels_at_start = state.labels_used
        if state.model and not Path(state.model, ONNX_FILE).is_file():
            raise CaptchaOCRError(
                f"the latest round's model {state.model} is gone; move {path} away to start "
                "the rounds afresh"
            )
        return state

    def _save_state(self) -> None:
        write_text_atomic(
            self.work_dir / STATE_FILE, json.dumps(dataclasses.asdict(self.state), indent=2)
        )

    def snapshot(self) -> RoundState:
        with self._lock:
            return dataclasses.replace(self.state)

    # -- starting --------------------------------------------------------------------------

    def maybe_start(self) -> bool:
        """Start a round when ``round_size`` labels came since the last one started."""
        with self._lock:
            if self.state.state == "training" or self._closing:
                return False
            labeled = self.store.labeled_count()
            if labeled - self.state.labels_at_start < self.round_size:
                return False
            if labeled < MIN_ROUND_LABELS:
                return False
            try:
                self.start()
            except Exception as error:  # a save that started it must still answer: it is saved
                self.state.labels_at_start = labeled  # no new try at every label
                self._failed(f"the round could not start: {error}")
                return False
            return True

    def start(self) -> int:
        """Start a round now; returns the number it will have when it finishes."""
        with self._lock:
            if self.state.state == "training":
                raise RoundBusy(f"round {self.state.number + 1} is training; wait for it to end")
            samples = self.store.samples()
            if len(samples) < MIN_ROUND_LABELS:
                raise RoundBusy(
                    f"a round needs at least {MIN_ROUND_LABELS} labels; there are {len(samples)}"
                )
            number = self.state.number + 1
            folder = self._new_round_dir(number)
            snapshot = folder / SNAPSHOT_CSV
            write_samples_csv(snapshot, samples)
            init = self.state.model or (self.init_model if can_init_from(self.init_model) else None)
            command = train_command(
                snapshot, folder / RUNS_SUBDIR, init, self.first_round_args, self.train_args
            )
            log.info("round %d: training on %d labels: %s", number, len(samples), command[3:])
            write_text_atomic(folder / COMMAND_FILE, shlex.join(command) + "\n")
            with (
                open(folder / STDOUT_FILE, "wb") as out,
                open(folder / STDERR_FILE, "wb") as err,
            ):
                process = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=out, stderr=err
                )
            self._process = process
            self.state.state, self.state.error = "training", ""
            self.state.labels_at_start = len(samples)
            self.state.round_dir, self.state.pid = str(folder), process.pid
            self.state.started = time.time()
            self._save_state()
            self._watcher = threading.Thread(
                target=self._watch, args=(process, folder, len(samples)), daemon=True
            )
            self._watcher.start()
            return number

    def _new_round_dir(self, number: int) -> Path:
        base = self.work_dir / ROUNDS_DIR / f"round-{number}"
        folder, attempt = base, 2
        while folder.exists():  # a failed attempt keeps its folder, to read its logs
            folder, attempt = base.with_name(f"{base.name}-attempt{attempt}"), attempt + 1
        folder.mkdir(parents=True)
        return folder

    # -- ending ----------------------------------------------------------------------------

    def _watch(self, process: subprocess.Popen, folder: Path, labels: int) -> None:
        status = process.wait()
        reader = None
        try:
            if self._closing:
                with self._lock:  # a restart trains this round again when it has its labels
                    self.state.labels_at_start = self.state.labels_used
                raise CaptchaOCRError("the app stopped while this round trained")
            if status not in (0, NOT_LEARNED_STATUS):
                tail = stderr_tail(folder / STDERR_FILE)
                raise CaptchaOCRError(f"train exited with status {status}:\n{tail}".rstrip())
            run_dir = run_folder(folder / RUNS_SUBDIR)
            reader = Reader.load(run_dir, threads=1, warn_not_usable=False)
            accuracy, val_images = round_accuracy(reader, run_dir)
        except Exception as error:  # any failure ends the round, never the app
            self._failed(str(error) if isinstance(error, CaptchaOCRError) else repr(error))
            return
        with self._lock:
            state = self.state
            state.number += 1
            state.state, state.error, state.warning = "idle", "", reader.not_usable
            state.model, state.accuracy, state.val_images = str(run_dir), accuracy, val_images
            state.labels_used, state.pid = labels, None
            state.seconds = round(time.time() - (state.started or time.time()), 1)
            state.started = None
            self._process = None
            self._save_state()
        log.info("round %d finished: accuracy %s on %d held-back labels%s", state.number,
                 "-" if accuracy is None else f"{accuracy:.1%}", val_images,
                 f" (not usable: {reader.not_usable})" if reader.not_usable else "")  # fmt: skip
        try:
            self.on_model(reader, str(run_dir))
        finally:
            self.maybe_start()

    def _failed(self, error: str) -> None:
        with self._lock:
            log.error("round %d failed: %s", self.state.number + 1, error)
            self.state.state, self.state.error = "failed", error
            self.state.pid, self.state.started, self._process = None, None, None
            self._save_state()

    def close(self, timeout: float = 10.0) -> None:
        """Stop a round in progress (the app is shutting down)."""
        with self._lock:
            self._closing = True
            process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
        watcher = self._watcher
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(timeout)  # it may be refreshing the suggestions (see Suggestions.stop)


def _stop_leftover(state: RoundState) -> None:
    """Stop the train process of a round that a killed app left running (if it is still
    that process: its command line names the round's folder)."""
    if not state.pid or not state.round_dir:
        return
    with contextlib.suppress(OSError):
        command = Path(f"/proc/{state.pid}/cmdline").read_bytes().replace(b"\0", b" ")
        if state.round_dir.encode() in command:
            log.info("stopping round training left running by the app (pid %d)", state.pid)
            os.kill(state.pid, signal.SIGTERM)
