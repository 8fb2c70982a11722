"""Pseudo-labels: a trained run reads images nobody labeled, and its surest reads become labels.

Self-training: the next training learns from the run's own labels and from the images the
run read with at least ``min_confidence``. On rkn_securimage a run trained on 609 labels read
the other 1,827 development images, and a training on both (its reads kept as labels) misread
a third fewer held-out captchas than the run: as many as doubling the real labels did
(``bench/RESULTS.md`` section pseudo-labels). Reads below the threshold are left out: a
wrong pseudo-label teaches the mistake. Reading side: ONNX Runtime, no Keras.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from captcha_ocr.config import load_yaml
from captcha_ocr.data import (
    PART_COLUMN,
    PSEUDO_SOURCE,
    SOURCE_COLUMN,
    TRAIN_PART,
    VAL_PART,
    Sample,
    labels_file_column,
    read_labels_file,
)
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.files import write_text_atomic
from captcha_ocr.infer import Reader
from captcha_ocr.runfolder import CONFIG_FILE, ONNX_FILE, TRAIN_CSV, VAL_CSV

# train reads path and label, validates on the rows of part val (the run's own validation
# images, so every round validates on the same person-labeled images) and trains on the rest
CSV_COLUMNS = ("path", "label", "confidence", SOURCE_COLUMN, PART_COLUMN)
LABELED = "labeled"  # the source column of a person's label (PSEUDO_SOURCE: a model's read)


@dataclass(frozen=True)
class PseudoLabels:
    """A run's own labels and the reads of unlabeled images kept as labels."""

    training: list[Sample]  # the run's training labels (less its pseudo-labels)
    validation: list[Sample]  # the run's validation labels
    kept: list[tuple[str, str, float]]  # (path, read, confidence) at >= min_confidence
    read: int  # unlabeled images read (the ones already labeled are not read again)
    unreadable: int
    already_labeled: int
    min_confidence: float

    @property
    def labels(self) -> int:
        """The person's labels among them (training and validation)."""
        return len(self.training) + len(self.validation)

    def describe(self) -> str:
        return (
            f"read {self.read:,} unlabeled image(s) ({self.unreadable} unreadable, "
            f"{self.already_labeled} already labeled in the run, not read): kept "
            f"{len(self.kept):,} read with confidence >= {self.min_confidence:.3f}"
        )


def run_labels(run_dir: Path) -> tuple[list[Sample], list[Sample]]:
    """The labels a run trained and validated on (its ``train.csv`` and ``val.csv``), less
    the pseudo-labels among them when it trained on a file this module wrote: a later round
    reads those images again, with a better model, instead of keeping an earlier read."""
    missing = [name for name in (TRAIN_CSV, VAL_CSV) if not (run_dir / name).is_file()]
    if missing:
        raise CaptchaOCRError(
            f"{run_dir} has no {' or '.join(missing)}: give the run folder that "
            "captcha-ocr train made (pseudo-labels are added to its own labels)"
        )
    pseudo = pseudo_labeled_paths(run_dir)
    return person_labels(run_dir, TRAIN_CSV, pseudo), person_labels(run_dir, VAL_CSV, pseudo)


def person_labels(run_dir: Path, name: str, pseudo: set[str] | None = None) -> list[Sample]:
    """The labels of the run's ``name`` file (``train.csv``, ``val.csv``) that a person gave:
    all of them, less the pseudo-labels (``pseudo``, else :func:`pseudo_labeled_paths`) when
    the run trained on a file this module wrote."""
    if pseudo is None:
        pseudo = pseudo_labeled_paths(run_dir)
    return [s for s in read_labels_file(run_dir / name) if os.path.realpath(s.path) not in pseudo]


def pseudo_labeled_paths(run_dir: Path) -> set[str]:
    """The images a run's labels file marked as pseudo-labeled (none when it trained on
    anything else, or the file is gone)."""
    if not (run_dir / CONFIG_FILE).is_file():
        return set()
    source = (load_yaml(run_dir / CONFIG_FILE).get("data") or {}).get("source")
    if not source or not Path(source).is_file():
        return set()
    try:
        sources = labels_file_column(source, SOURCE_COLUMN)
    except CaptchaOCRError:  # changed since into something train would not read: no marks
        return set()
    return {path for path, value in sources.items() if value == PSEUDO_SOURCE}


def pseudo_label(
    run_dir: str | os.PathLike,
    images: Sequence[str],
    min_confidence: float | str,
    threads: int | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> PseudoLabels:
    """Read ``images`` with the run's ``model.onnx`` and keep the reads of at least
    ``min_confidence`` (a number, or ``recommended``: the run's reject threshold; reads held
    to the trained lengths, as ``predict`` reads). Images the run already has a label for
    are skipped, and an image named twice is read once; unreadable ones are counted, not
    fatal."""
    if not isinstance(min_confidence, str) and not 0.0 <= min_confidence <= 1.0:
        raise CaptchaOCRError(f"min_confidence must be from 0 to 1, got {min_confidence}")
    run_dir = Path(run_dir)
    training, validation = run_labels(run_dir)
    known = {os.path.realpath(s.path) for s in training + validation}
    by_file = {os.path.realpath(path): path for path in images}  # an image named twice: once
    unlabeled = [path for real, path in by_file.items() if real not in known]
    reader = Reader.load(run_dir / ONNX_FILE, threads=threads, warn_not_usable=False)
    if reader.not_usable:
        raise CaptchaOCRError(
            f"{run_dir} did not learn ({reader.not_usable}): its reads would teach its "
            "mistakes; train a run that reads its validation images first"
        )
    threshold = reader.min_confidence(min_confidence)
    predictions = reader.read_batch(unlabeled, batch_size, skip_errors=True, progress=progress)
    if unlabeled and all(p.error is not None for p in predictions):
        raise CaptchaOCRError(
            f"none of the {len(unlabeled)} unlabeled images could be read; check that the "
            "files are images (PNG, JPEG, ...) and not damaged"
        )
    kept = [
        (str(Path(path).resolve()), p.text, p.confidence)
        for path, p in zip(unlabeled, predictions)
        if p.error is None and p.text and p.confidence >= threshold
    ]
    return PseudoLabels(
        training=training,
        validation=validation,
        kept=kept,
        read=len(unlabeled),
        unreadable=sum(p.error is not None for p in predictions),
        already_labeled=len(by_file) - len(unlabeled),
        min_confidence=threshold,
    )


def write_pseudo_csv(result: PseudoLabels, path: str | os.PathLike) -> Path:
    """The run's labels, then the kept reads, as ``path,label,confidence,source,part`` rows
    with absolute paths (atomically): a labels file ``captcha-ocr train`` reads as it is,
    validating on the run's own validation images."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for part, samples in ((TRAIN_PART, result.training), (VAL_PART, result.validation)):
        writer.writerows((str(Path(s.path).resolve()), s.label, "", LABELED, part) for s in samples)
    writer.writerows(
        (p, text, f"{conf:.6f}", PSEUDO_SOURCE, TRAIN_PART) for p, text, conf in result.kept
    )
    write_text_atomic(path, buffer.getvalue())
    return Path(path)
