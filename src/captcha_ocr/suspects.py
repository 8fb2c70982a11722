"""Suspect labels: the images a model most confidently reads differently from their labels.

A labeled set has a few wrong labels. A model that learned the set reads such an image as
what it shows, not as its label, and is sure of it; so the images read differently from
their labels, most confident read first, are the ones to check first. Unreadable images,
and images read as nothing at all, are not suspects: they say nothing about the label
(``evaluate`` reports them). Reading side: ONNX Runtime and Pillow, no Keras.

>>> from captcha_ocr.evaluate import ImageResult, Report
>>> results = [ImageResult("a.png", "abc", "abd", 0.6, 0.33),
...            ImageResult("b.png", "xyz", "xyz", 0.99, 0.0),
...            ImageResult("c.png", "pqr", "pqs", 0.97, 0.33)]
>>> [s.path for s in find_suspects(Report(3, 0.33, 0.22, 0.67, 1.0, results=results))]
['c.png', 'a.png']
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from captcha_ocr.config import load_run_verdict
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.evaluate import Report, evaluate
from captcha_ocr.files import write_text_atomic
from captcha_ocr.images import ImageLoadError, open_image, to_rgb_or_grey
from captcha_ocr.infer import Reader
from captcha_ocr.more_labels import more_labels_hint, training_and_validation
from captcha_ocr.pseudo_labels import person_labels, pseudo_labeled_paths
from captcha_ocr.runfolder import ONNX_FILE, SUSPECTS_CSV, SUSPECTS_GRID, TRAIN_CSV, VAL_CSV
from captcha_ocr.survey import draw_grid

log = logging.getLogger(__name__)

CSV_COLUMNS = ("path", "label", "read", "confidence")

# A read this sure that differs from its label points at the label more than at the model
# (greedy confidence is the best CTC path's probability, a lower bound of the text's). A
# fixed line, so that train's count means the same in every run; the lists keep every misread.
CONFIDENT = 0.9

GRID_LIMIT = 48  # images in a grid: the top of the list is what a person checks first
TILE_W, TILE_H = 200, 70  # each image is scaled to fit this box (200x50 captchas: 1:1)


@dataclass(frozen=True)
class Suspect:
    """An image read as ``read`` (with ``confidence``) that is labeled ``label``."""

    path: str
    label: str
    read: str
    confidence: float


def find_suspects(
    report: Report, limit: int | None = None, min_confidence: float = 0.0
) -> list[Suspect]:
    """The images of ``report`` read differently from their labels with at least
    ``min_confidence``, most confident read first (ties by path), at most ``limit``."""
    suspects = [
        Suspect(r.path, r.label, r.prediction, r.confidence)
        for r in report.results
        if r.read_otherwise(min_confidence)  # not unreadable, nor read as nothing
    ]
    suspects.sort(key=lambda s: (-s.confidence, s.path))
    return suspects if limit is None else suspects[: max(0, limit)]


def write_suspects_csv(path: str | os.PathLike, suspects: Sequence[Suspect]) -> Path:
    """Write ``path,label,read,confidence`` rows, in their order, atomically (a header only
    when there is no suspect)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows((s.path, s.label, s.read, f"{s.confidence:.6f}") for s in suspects)
    write_text_atomic(path, buffer.getvalue())
    return Path(path)


def read_suspects_csv(path: str | os.PathLike) -> list[Suspect]:
    """The rows :func:`write_suspects_csv` wrote, in their order."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return [
                Suspect(row["path"], row["label"], row["read"], float(row["confidence"]))
                for row in csv.DictReader(handle)
            ]
    except (OSError, KeyError, ValueError, csv.Error) as error:
        raise CaptchaOCRError(f"cannot read suspects from {path}: {error}") from None


def _tile(path: str) -> Image.Image:
    """The image scaled to fit the tile box (aspect kept); a grey box when it cannot be read."""
    try:
        image = to_rgb_or_grey(open_image(path), 3)
    except ImageLoadError:
        return Image.new("RGB", (TILE_W, TILE_H), "lightgrey")
    scale = min(TILE_W / image.width, TILE_H / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)


def _short(text: str, chars: int = 30) -> str:
    return text if len(text) <= chars else "..." + text[-(chars - 3) :]


def suspects_grid(
    suspects: Sequence[Suspect], path: str | os.PathLike, columns: int = 4, title: str = ""
) -> Path:
    """A PNG of the suspects in their order (``columns`` a row): each image with its number
    and file name, its label and the model's read written under it; written atomically."""
    if not suspects:
        raise CaptchaOCRError("no suspect to draw")
    tiles = [
        (
            _tile(suspect.path),
            [
                (f"{index + 1}. {_short(Path(suspect.path).name)}", "dimgrey"),
                (f"label {suspect.label}", "black"),
                (f"read  {suspect.read}  ({suspect.confidence:.2f})", "firebrick"),
            ],
        )
        for index, suspect in enumerate(suspects)
    ]
    return draw_grid(tiles, columns, path, title, tile_size=(TILE_W, TILE_H))


def write_suspects(
    csv_path: str | os.PathLike,
    grid_path: str | os.PathLike,
    suspects: Sequence[Suspect],
    title: str = "",
) -> Path | None:
    """Every suspect to ``csv_path`` and a grid of the first ``GRID_LIMIT`` to ``grid_path``;
    no grid (and an old one removed) when there is no suspect. Returns the grid's path."""
    write_suspects_csv(csv_path, suspects)
    if not suspects:
        Path(grid_path).unlink(missing_ok=True)
        return None
    return suspects_grid(suspects[:GRID_LIMIT], grid_path, title=title)


def format_suspects(suspects: Sequence[Suspect]) -> str:
    """A plain table, one suspect a line: file, label, read, confidence.

    >>> print(format_suspects([Suspect("d/a.png", "abc", "abd", 0.97)]))
    file     label  read  confidence
    d/a.png  abc    abd   0.970
    """
    rows = [("file", "label", "read", "confidence")]
    rows += [(s.path, s.label, s.read, f"{s.confidence:.3f}") for s in suspects]
    widths = [max(len(row[k]) for row in rows) for k in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3]
        for row in rows
    )


def describe(suspect: Suspect) -> str:
    """``name.png (labeled 'abc', read 'abd' at 0.97)``."""
    name = Path(suspect.path).name
    return f"{name} (labeled {suspect.label!r}, read {suspect.read!r} at {suspect.confidence:.2f})"


def find_run_suspects(run_dir: str | os.PathLike, threads: int | None = None) -> list[Suspect]:
    """Read a run's training and validation images with its ``model.onnx``; write every
    image read differently from its label, most confident first, to
    ``RUN_DIR/suspect_labels.csv``, a grid of the first to ``suspect_labels.png``, and log
    how many are read so with at least ``CONFIDENT`` confidence; then log how well each part
    is read, with the hint that more labels help most when the reads give it
    (:mod:`captcha_ocr.more_labels`). Returns the suspects."""
    run_dir = Path(run_dir)
    reader = Reader.load(run_dir / ONNX_FILE, threads=threads, warn_not_usable=False)
    pseudo = pseudo_labeled_paths(run_dir)  # the model's own reads: no one to correct them
    parts = {
        name: person_labels(run_dir, name, pseudo)
        for name in (TRAIN_CSV, VAL_CSV)
        if (run_dir / name).is_file()
    }
    report = evaluate(reader, [sample for part in parts.values() for sample in part])
    suspects = find_suspects(report)
    grid = run_dir / SUSPECTS_GRID
    title = f"run {run_dir.name}: images read differently from their labels, surest first"
    write_suspects(run_dir / SUSPECTS_CSV, grid, suspects, title)
    confident = [s for s in suspects if s.confidence >= CONFIDENT]
    if confident:
        log.warning(
            "%d of the %d training and validation images are read differently from their "
            "labels with confidence >= %.2f; the most suspect: %s (check their labels: see %s)",
            len(confident),
            report.count,
            CONFIDENT,
            "; ".join(describe(s) for s in confident[:3]),
            grid,
        )
    elif suspects:
        log.info(
            "no training or validation image is read differently from its label with "
            "confidence >= %.2f (%d less sure misreads are listed in %s)",
            CONFIDENT,
            len(suspects),
            run_dir / SUSPECTS_CSV,
        )
    else:
        log.info("every training and validation image is read as labeled")
    if TRAIN_CSV in parts and VAL_CSV in parts:
        _log_reads_and_hint(report, len(parts[TRAIN_CSV]))
    return suspects


def _log_reads_and_hint(report: Report, train_count: int) -> None:
    """Log how well the run reads its training images (the first ``train_count`` of
    ``report``) and its validation images, and the hint of :mod:`captcha_ocr.more_labels`
    when those reads give it."""
    train, val = training_and_validation(report.results, train_count, CONFIDENT)
    log.info("%s; %s", train.describe(), val.describe())
    hint = more_labels_hint(train, val)
    if hint:
        log.warning("hint: %s", hint)


def check_run_labels(run_dir: str | os.PathLike) -> list[Suspect] | None:
    """:func:`find_run_suspects` after ``train``, never failing the run: skipped (None) when
    the run did not learn (its reads would accuse right labels) or anything goes wrong."""
    try:
        if not load_run_verdict(run_dir)[0]:
            log.info("suspect labels not looked for: the run did not learn")
            return None
        return find_run_suspects(run_dir)
    # The model is exported and the run is done; this list is advice on top of it, so no
    # error here may turn a finished run into a failed one. It is said, not hidden.
    except Exception as error:
        log.warning("suspect labels not looked for: %s: %s", type(error).__name__, error)
        return None
