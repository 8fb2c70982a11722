"""Would more labels help a run most? Its reads of its own training and validation images say.

A model that reads nearly all of its training images right but clearly fewer of its
validation images has learned the images it saw better than the style: more labeled images
help most there (on rkn_securimage each doubling of the labels cut the misreads by about a
third, ``bench/RESULTS.md`` section rkn-labels-curve). Two things look alike and are not
that: wrong labels (the model reads those images as they show, and surely, so sure misreads
are left out of both figures) and a model that does not read its own training images either
(more labels would not fix that). Images that cannot be read say nothing about either and are
not counted. Reading side: no Keras.

>>> train, val = PartReads("training", 2192, 8, 0), PartReads("validation", 244, 10, 1)
>>> more_labels_hint(train, val) is not None
True
>>> more_labels_hint(train, PartReads("validation", 244, 10, 8)) is None  # wrong labels
True
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from captcha_ocr.evaluate import ImageResult

# The rule's lines, checked on the runs of bench/RESULTS.md section more-labels-hint.
LEARNED_TRAINING = 0.99  # the training images read at least this well: the model fits them
ROOM = 0.98  # validation read under this: there is something to gain
GAP = 0.02  # validation this far under training: more than the noise of a few images
MIN_MISREADS = 3  # validation misreads (sure ones aside) a gap must rest on


@dataclass(frozen=True)
class PartReads:
    """How a run read one part of its labeled images: ``misreads`` of the ``images`` it could
    open read otherwise than labeled (empty reads included), ``sure`` of them with a confidence
    that points at the label more than at the model."""

    name: str
    images: int
    misreads: int
    sure: int

    @property
    def accuracy(self) -> float:
        """The share read as labeled, the sure misreads left out as likely wrong labels."""
        kept = self.images - self.sure
        return 1.0 - (self.misreads - self.sure) / kept if kept else 0.0

    def describe(self) -> str:
        """``2,192 training images: 99.6% read as labeled`` (sure misreads aside).

        >>> PartReads("training", 2192, 8, 0).describe()
        '2,192 training images: 99.6% read as labeled'
        >>> PartReads("validation", 244, 10, 1).describe()
        '244 validation images: 96.3% read as labeled (1 sure misread left aside)'
        """
        aside = f" ({self.sure} sure misread{'s' if self.sure > 1 else ''} left aside)"
        return (
            f"{self.images:,} {self.name} images: {self.accuracy:.1%} read as labeled"
            f"{aside if self.sure else ''}"
        )


def count_reads(name: str, results: Iterable[ImageResult], sure_confidence: float) -> PartReads:
    """Count the misreads of ``results`` (those not opened left out) and those read otherwise
    with at least ``sure_confidence``."""
    opened = [r for r in results if r.error is None]
    wrong = [r for r in opened if r.prediction != r.label]
    sure = [r for r in wrong if r.read_otherwise(sure_confidence)]
    return PartReads(name, len(opened), len(wrong), len(sure))


def training_and_validation(
    results: Sequence[ImageResult], train_count: int, sure_confidence: float
) -> tuple[PartReads, PartReads]:
    """A run's reads of its training images (the first ``train_count`` of ``results``) and
    of its validation images (the rest), counted."""
    return (
        count_reads("training", results[:train_count], sure_confidence),
        count_reads("validation", results[train_count:], sure_confidence),
    )


def more_labels_hint(train: PartReads, val: PartReads) -> str | None:
    """A line saying that more labels should help most, or None when the reads do not say so."""
    if (
        train.accuracy < LEARNED_TRAINING
        or val.accuracy >= ROOM
        or val.accuracy > train.accuracy - GAP
        or val.misreads - val.sure < MIN_MISREADS
    ):
        return None
    return (
        f"the model reads {train.accuracy:.1%} of its training images but {val.accuracy:.1%} "
        "of its validation images: it knows the images it saw better than the style, so more "
        "labeled images should help it most (captcha-ocr label suggests them; see the "
        "README's 'More labels')"
    )
