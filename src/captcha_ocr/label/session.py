"""A labeling session: the store, the suggestions and the rounds of one images folder.

The web app (:mod:`captcha_ocr.label.app`) is a thin layer over :class:`LabelSession`;
so is a script that labels without a browser.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.files import write_text_atomic
from captcha_ocr.images import IMAGE_SUFFIXES
from captcha_ocr.infer import Reader
from captcha_ocr.label.queue import DEFAULT_ORDER, ORDERS, Suggestions, queue_order, shuffled_ranks
from captcha_ocr.label.rounds import Rounds
from captcha_ocr.label.store import LabelStore

log = logging.getLogger(__name__)

LABELS_FILE = "labels.csv"  # the default labels CSV, in the images folder
SESSION_FILE = "session.json"  # in the work folder: which images folder it belongs to
LOCK_FILE = "app.lock"
RATE_WINDOW_S = 600.0  # labels per minute counts the saves of the last ten minutes


@dataclass(frozen=True)
class LabelSettings:
    """What ``captcha-ocr label`` was asked to do."""

    images: Path  # the folder of captchas (read recursively; never modified)
    work_dir: Path  # rounds, journal and state (never inside ``images``)
    labels: Path | None = None  # the labels CSV; None: IMAGES/labels.csv
    model: str | None = None  # a run folder or .onnx: suggestions from the start
    round_size: int = 50  # a training round after this many new labels
    charset: str | None = None  # the characters a label may have; None: any
    order: str = DEFAULT_ORDER  # queue order once a model exists (queue.ORDERS)
    seed: int = 0  # the queue's order before any model
    # train flags of round 1 without a --model run; None: rounds.first_round_start decides
    first_round_args: tuple[str, ...] | None = None
    train_args: tuple[str, ...] = ()  # train flags of every round

    @property
    def labels_csv(self) -> Path:
        return self.labels if self.labels is not None else self.images / LABELS_FILE


def default_work_dir(images: Path, runs_dir: str | Path) -> Path:
    """``RUNS/label-<name of the images folder>``."""
    return Path(runs_dir) / f"label-{images.resolve().name}"


class LabelSession:
    """Labels, suggestions and rounds of one images folder; see :mod:`captcha_ocr.label`.

    >>> session = LabelSession(LabelSettings(Path("captchas"), Path("runs/label-captchas")))  # doctest: +SKIP
    >>> session.start()                                                      # doctest: +SKIP
    >>> [item["id"] for item in session.queue(3)]                            # doctest: +SKIP
    """

    def __init__(self, settings: LabelSettings) -> None:
        self.settings = settings
        check_folders(settings)
        self._lock_handle = lock_work_dir(settings.work_dir)
        try:
            claim_work_dir(settings)
            self.store = LabelStore(
                settings.images, settings.labels_csv, settings.work_dir, settings.charset
            )
            if not self.store.images:
                raise CaptchaOCRError(no_images_message(settings.images, self.store.skipped))
            self.suggestions = Suggestions()
            self.rounds = Rounds(
                settings.work_dir,
                self.store,
                self._refresh,
                settings.round_size,
                settings.model,
                settings.first_round_args,
                settings.train_args,
            )
            model = self.rounds.state.model or settings.model
            # A bad --model is an error now, not a log line in a thread.
            self._first_reader = Reader.load(model, warn_not_usable=False) if model else None
        except BaseException:
            self._lock_handle.close()
            raise
        self._first_model = model
        self._ranks = shuffled_ranks([i.id for i in self.store.images], settings.seed)
        self._saves: collections.deque[float] = collections.deque(maxlen=1000)
        self._first_refresh: threading.Thread | None = None

    def start(self) -> None:
        """Begin the background work: suggestions from the model there is, and a round if
        enough labels are waiting for one."""
        if self._first_reader is not None:
            reader, self._first_reader = self._first_reader, None
            self._first_refresh = threading.Thread(
                target=self._refresh, args=(reader, str(self._first_model)), daemon=True
            )
            self._first_refresh.start()
        self.rounds.maybe_start()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the background work: a refresh of the suggestions at its next chunk (waited
        for), a round in progress."""
        self.suggestions.stop()
        self.rounds.close(timeout)
        if self._first_refresh is not None:
            self._first_refresh.join(timeout)
        self._lock_handle.close()

    def _refresh(self, reader: Reader, model: str) -> None:
        try:
            images = self.store.unlabeled()
            self.suggestions.refresh(reader, model, images, self.settings.charset)
        except Exception:  # a failed refresh keeps the old suggestions; the app goes on
            log.exception("could not refresh the suggestions with %s", model)

    # -- what the API does -----------------------------------------------------------------

    def queue(self, limit: int, order: str | None = None) -> list[dict]:
        """The next ``limit`` unlabeled images in queue order, with their suggestions."""
        order = order or self.settings.order
        if order not in ORDERS:
            raise CaptchaOCRError(f"unknown order {order!r}; choose from {', '.join(ORDERS)}")
        suggestions = self.suggestions.get()
        unreadable = self.suggestions.failed
        images = {i.id: i for i in self.store.unlabeled() if i.id not in unreadable}
        ids = queue_order(list(images), suggestions, self._ranks, order)[: max(0, limit)]
        items = []
        for image_id in ids:
            suggestion = suggestions.get(image_id)
            items.append(
                {
                    "id": image_id,
                    "path": images[image_id].rel,
                    "suggestion": suggestion.text if suggestion else None,
                    "confidence": suggestion.confidence if suggestion else None,
                }
            )
        return items

    def save(self, image_id: str, label: object) -> str:
        label = self.store.save(image_id, label)
        self._saves.append(time.monotonic())
        self.rounds.maybe_start()
        return label

    def remove(self, image_id: str) -> None:
        self.store.remove(image_id)

    def skipped(self) -> list[dict]:
        """Images that cannot be labeled here: unreadable headers, or the model failed to
        decode them."""
        items = [{"path": s.path, "reason": s.reason} for s in self.store.skipped]
        for image_id, reason in self.suggestions.failed.items():
            items.append({"path": self.store.by_id[image_id].rel, "reason": reason})
        return items

    def labels_per_minute(self) -> float:
        now = time.monotonic()
        recent = [t for t in self._saves if now - t <= RATE_WINDOW_S]
        if len(recent) < 2 or recent[-1] <= recent[0]:
            return 0.0
        return round((len(recent) - 1) / (recent[-1] - recent[0]) * 60.0, 1)

    def status(self) -> dict:
        labeled = self.store.labeled_count()
        return {
            "total": len(self.store.images),
            "labeled": labeled,
            "skipped": len(self.store.skipped) + len(self.suggestions.failed),
            "labels_per_minute": self.labels_per_minute(),
            "round_size": self.settings.round_size,
            "next_round_at": self.rounds.snapshot().labels_at_start + self.settings.round_size,
            "round": self.rounds.snapshot().public(),
            "suggestions": {
                "model": self.suggestions.model,
                "count": len(self.suggestions.get()),
                "refreshing": self.suggestions.refreshing,
            },
            "charset": self.settings.charset,
            "labels_file": str(self.store.csv_path),
        }


def check_folders(settings: LabelSettings) -> None:
    """The images folder exists, and the work folder is not inside it."""
    images = settings.images
    if not images.exists():
        raise CaptchaOCRError(f"images folder {images} does not exist")
    if not images.is_dir():
        raise CaptchaOCRError(f"{images} is not a folder; give the folder of captchas to label")
    work = settings.work_dir.resolve()
    if work == images.resolve() or images.resolve() in work.parents:
        raise CaptchaOCRError(
            f"the work folder {settings.work_dir} is inside the images folder {images}; "
            "choose another --out (only the labels CSV is written among the images)"
        )
    if settings.labels_csv.exists() and not settings.labels_csv.is_file():
        raise CaptchaOCRError(f"--labels {settings.labels_csv} is not a file")


def no_images_message(images: Path, skipped: list) -> str:
    if skipped:
        return (
            f"none of the {len(skipped)} image(s) in {images} can be read, e.g. "
            f"{skipped[0].path}: {skipped[0].reason}"
        )
    return f"no images found in {images} (looked for {', '.join(IMAGE_SUFFIXES)})"


def lock_work_dir(work_dir: Path):
    """Hold a lock on the work folder while the session lives: a second app on the same
    folder would interleave two journals' folds."""
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        handle = open(work_dir / LOCK_FILE, "a+")  # noqa: SIM115 - held until close()
    except OSError as error:
        raise CaptchaOCRError(
            f"cannot write the work folder {work_dir}: {error.strerror or error}; choose "
            "another --out"
        ) from None
    with contextlib.suppress(ImportError):
        import fcntl

        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise CaptchaOCRError(
                f"another captcha-ocr label is running with the work folder {work_dir}; stop "
                "it first (or choose another --out)"
            ) from None
    return handle


def claim_work_dir(settings: LabelSettings) -> None:
    """Record which images folder the work folder belongs to; refuse another's."""
    path = settings.work_dir / SESSION_FILE
    mine = {"images": str(settings.images.resolve()), "labels": str(settings.labels_csv.resolve())}
    if path.is_file():
        try:
            theirs = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            theirs = {}
        if theirs.get("images") not in (None, mine["images"]):
            raise CaptchaOCRError(
                f"the work folder {settings.work_dir} belongs to the images folder "
                f"{theirs['images']}; choose another --out for {settings.images}"
            )
    write_text_atomic(path, json.dumps(mine, indent=2))
