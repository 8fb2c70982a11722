"""The label store: the images of a folder and their labels, durable at every save.

The labels live in one ``path,label`` CSV (the format ``train`` reads: relative paths are
relative to the CSV's folder). It is the only file written among the user's images, and
it is replaced atomically. Every save first goes to an append-only journal (JSON lines,
fsynced) in the app's work folder, then is folded into the CSV; at start-up, journal
entries not yet folded (a crash between the two) are folded in. A CSV written by hand or
by another tool is read and respected, also when it changes while the app runs.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from captcha_ocr.data import Sample, image_files, is_utf8, read_labels_file, shown_name
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.files import write_text_atomic
from captcha_ocr.images import ImageLoadError, read_header

log = logging.getLogger(__name__)

JOURNAL_FILE = "journal.jsonl"


class LabelError(CaptchaOCRError):
    """A label the store refuses (the API answers 422 with its message)."""


class UnknownImage(CaptchaOCRError):
    """An image id that is not in the folder (the API answers 404)."""


@dataclass(frozen=True)
class Image:
    """One image of the folder: ``id`` (stable, URL-safe, from ``rel``), its path relative to
    the images folder (``rel``, POSIX) and its absolute path."""

    id: str
    rel: str
    path: str


@dataclass(frozen=True)
class Skipped:
    """An image the app cannot show or train on, and why."""

    path: str
    reason: str


def image_id(rel: str) -> str:
    """The id of an image from its path relative to the images folder.

    >>> image_id("a/2b827.png")
    'ff5263f4a9bb0758'
    """
    return hashlib.sha1(rel.encode("utf-8")).hexdigest()[:16]


def scan_images(root: Path) -> tuple[list[Image], list[Skipped]]:
    """The images under ``root`` (recursively, sorted) whose header reads, and the others."""
    images, skipped = [], []
    for path in image_files(root):
        if not is_utf8(str(path)):
            skipped.append(Skipped(shown_name(str(path)), "the file name is not valid UTF-8"))
            continue
        rel = path.relative_to(root).as_posix()
        try:
            read_header(path)
        except ImageLoadError as error:
            skipped.append(Skipped(rel, str(error)))
            continue
        images.append(Image(image_id(rel), rel, os.path.normpath(os.path.abspath(path))))
    return images, skipped


def check_label(label: object, charset: str | None) -> str:
    """The label if the store takes it, else :class:`LabelError` saying why."""
    if not isinstance(label, str) or not label:
        raise LabelError("the label is empty; type the captcha's text")
    if label != label.strip():
        raise LabelError(f"the label {label!r} starts or ends with a space; remove it")
    if any(not c.isprintable() for c in label):
        raise LabelError(f"the label {label!r} has a control character; type only the text")
    if charset is not None:
        unknown = "".join(sorted({c for c in label if c not in charset}))
        if unknown:
            raise LabelError(
                f"{unknown!r} in {label!r} is not in the charset {charset!r} (--charset)"
            )
    return label


class LabelStore:
    """The labels of one images folder: read the CSV and journal, save, un-label, fold.

    Thread-safe: saves are serialized, so two browser tabs at once corrupt nothing (the
    last write wins).

    >>> store = LabelStore("captchas", "captchas/labels.csv", "runs/label-captchas")  # doctest: +SKIP
    >>> store.save(store.images[0].id, "2b827")                                       # doctest: +SKIP
    """

    def __init__(
        self,
        images_dir: str | os.PathLike,
        labels_csv: str | os.PathLike,
        work_dir: str | os.PathLike,
        charset: str | None = None,
    ) -> None:
        self.root = Path(images_dir).absolute()
        self.csv_path = Path(labels_csv).absolute()
        self.journal_path = Path(work_dir).absolute() / JOURNAL_FILE
        self.charset = charset
        self.images, self.skipped = scan_images(self.root)
        self.by_id = {image.id: image for image in self.images}
        self._by_path = {image.path: image for image in self.images}
        self._lock = threading.Lock()
        self._rows: dict[str, str] = {}  # absolute path -> label: every row of the CSV
        self._csv_stat: tuple | None = None  # the CSV as this store last wrote or read it
        self._pending: list[tuple[str, str | None]] = []  # journaled, not yet folded
        self.journal_path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._rows = self._read_csv()
            self._pending = self._read_journal()
            for key, label in self._pending:
                self._apply(key, label)
            if self._pending:
                log.info("folding %d journaled label(s) into %s", len(self._pending), self.csv_path)
                self._fold()
        self._warn_about_foreign_labels()

    # -- reading ---------------------------------------------------------------------------

    def label(self, image_id: str) -> str | None:
        """The label of an image (None: unlabeled); :class:`UnknownImage` for a bad id."""
        image = self.image(image_id)
        with self._lock:
            return self._rows.get(image.path)

    def image(self, image_id: str) -> Image:
        try:
            return self.by_id[image_id]
        except KeyError:
            raise UnknownImage(f"no image with id {image_id!r} in {self.root}") from None

    def labeled_images(self) -> list[tuple[Image, str]]:
        """The folder's labeled images and their labels, in folder order."""
        with self._lock:
            return [(i, self._rows[i.path]) for i in self.images if i.path in self._rows]

    def unlabeled(self) -> list[Image]:
        with self._lock:
            return [image for image in self.images if image.path not in self._rows]

    def labeled_count(self) -> int:
        with self._lock:
            return sum(1 for image in self.images if image.path in self._rows)

    def samples(self) -> list[Sample]:
        """The labeled images as training samples (absolute paths)."""
        return [Sample(image.path, label) for image, label in self.labeled_images()]

    # -- writing ---------------------------------------------------------------------------

    def save(self, image_id: str, label: object) -> str:
        """Label an image: durable (journaled and fsynced) when this returns."""
        image = self.image(image_id)
        label = check_label(label, self.charset)
        self._write(image, label)
        return label

    def remove(self, image_id: str) -> None:
        """Un-label an image (durable when this returns, like :meth:`save`)."""
        self._write(self.image(image_id), None)

    def _write(self, image: Image, label: str | None) -> None:
        with self._lock:
            entry = {"path": image.rel, "label": label, "time": round(time.time(), 3)}
            with open(self.journal_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            self._pending.append((image.path, label))
            self._apply(image.path, label)
            self._fold()

    def _apply(self, key: str, label: str | None) -> None:
        if label is None:
            self._rows.pop(key, None)
        else:
            self._rows[key] = label

    def _fold(self) -> None:
        """Write every row into the CSV (atomically), then empty the journal. A CSV changed
        by someone else since this store last wrote it is read again first, so its rows win
        over this store's older ones, and only the journaled saves are laid on top."""
        if self._csv_stat is not None and _stat(self.csv_path) != self._csv_stat:
            log.info("%s changed on disk; reading it again", self.csv_path)
            self._rows = self._read_csv()
            for key, label in self._pending:
                self._apply(key, label)
        write_text_atomic(self.csv_path, self._csv_text())
        _fsync_folder(self.csv_path.parent)
        self._csv_stat = _stat(self.csv_path)
        # Only once the CSV holds every save is the journal emptied; a crash before this
        # line replays saves that are already in the CSV, which changes nothing.
        with open(self.journal_path, "w", encoding="utf-8") as handle:
            os.fsync(handle.fileno())
        self._pending = []

    def _csv_text(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "label"])
        folder = str(self.csv_path.parent) + os.sep
        for key, label in self._rows.items():
            shown = Path(key[len(folder) :]).as_posix() if key.startswith(folder) else key
            writer.writerow([shown, label])
        return buffer.getvalue()

    # -- start-up --------------------------------------------------------------------------

    def _read_csv(self) -> dict[str, str]:
        self._csv_stat = _stat(self.csv_path)
        if self._csv_stat is None:
            return {}
        rows = {}
        for sample in read_labels_file(self.csv_path):
            rows[os.path.normpath(os.path.abspath(sample.path))] = sample.label
        return rows

    def _read_journal(self) -> list[tuple[str, str | None]]:
        """The journal's entries; a torn last line (a crash while it was written: its save
        never returned) is dropped."""
        if not self.journal_path.is_file():
            return []
        entries = []
        lines = self.journal_path.read_text(encoding="utf-8", errors="replace").splitlines()
        for number, line in enumerate(lines, 1):
            try:
                entry = json.loads(line)
                key = os.path.normpath(self.root / entry["path"])
                label = entry["label"]
                if label is not None and not isinstance(label, str):
                    raise TypeError(label)
            except (ValueError, KeyError, TypeError):
                if number < len(lines):
                    raise CaptchaOCRError(
                        f"{self.journal_path}:{number} is damaged; move the file away to "
                        "start without the labels saved since the last fold"
                    ) from None
                log.warning("dropped a half-written last line of %s", self.journal_path)
                continue
            entries.append((key, label))
        return entries

    def _warn_about_foreign_labels(self) -> None:
        if self.charset is None:
            return
        outside = [(p, lab) for p, lab in self._rows.items() if set(lab) - set(self.charset)]
        if outside:
            log.warning(
                "%d label(s) in %s have characters outside --charset %r, e.g. %r; they are "
                "kept as they are",
                len(outside),
                self.csv_path,
                self.charset,
                outside[0][1],
            )


def _stat(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
