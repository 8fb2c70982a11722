"""Would more labels help a run most? Its reads of its own training and validation images say.

A model that reads nearly all of its training images right but clearly fewer of its
validation images has learned the images it saw better than the style: more labeled images
help most there (on rkn_securimage each doubling of the labels cut the misreads by about a
third, ``bench/RESULTS.md`` section rkn-labels-curve). Two things look alike and are not
that: wrong labels in the validation part (the model reads those images right, and surely,
so its sure misreads are left out of the validation figure) and a model that does not read
its own training images either (more labels would not fix that). Reading side: no Keras.

>>> train, val = SplitReads("training", 2192, 8, 0), SplitReads("validation", 244, 10, 1)
>>> more_labels_hint(train, val) is not None
True
>>> more_labels_hint(train, SplitReads("validation", 244, 10, 8)) is None  # wrong labels
True
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from captcha_ocr.evaluate import ImageResult

# The rule's lines, chosen on the runs of bench/RESULTS.md section more-labels-hint.
LEARNED_TRAINING = 0.99  # the training images read at least this well: the model fits them
ROOM = 0.98  # validation read under this (sure misreads aside): there is something to gain
GAP = 0.02  # validation this far under training: not noise of a few images
MIN_MISREADS = 3  # validation misreads (sure ones aside) a gap must rest on


@dataclass(frozen=True)
class SplitReads:
    """How a run read one part of its labeled images: ``misreads`` of ``images`` read
    otherwise than labeled (unreadable and empty reads included), ``sure`` of them with a
    confidence that points at the label more than at the model."""

    name: str
    images: int
    misreads: int
    sure: int

    @property
    def accuracy(self) -> float:
        return 1.0 - self.misreads / self.images if self.images else 0.0

    @property
    def accuracy_sure_aside(self) -> float:
        """The accuracy with the sure misreads taken as wrong labels, left out of the count."""
        kept = self.images - self.sure
        return 1.0 - (self.misreads - self.sure) / kept if kept else 0.0

    def describe(self) -> str:
        """``2,192 training images: 99.64 % read as labeled``."""
        return f"{self.images:,} {self.name} images: {self.accuracy:.2%} read as labeled"


def split_reads(name: str, results: Iterable[ImageResult], sure_confidence: float) -> SplitReads:
    """Count the misreads of ``results`` and those read otherwise with at least
    ``sure_confidence``."""
    results = list(results)
    wrong = [r for r in results if r.prediction != r.label]
    sure = [r for r in wrong if r.prediction and r.confidence >= sure_confidence]
    return SplitReads(name, len(results), len(wrong), len(sure))


def more_labels_hint(train: SplitReads, val: SplitReads) -> str | None:
    """A line saying that more labels should help most, or None when the reads do not say so."""
    val_accuracy = val.accuracy_sure_aside
    if (
        train.accuracy < LEARNED_TRAINING
        or val_accuracy >= ROOM
        or val_accuracy > train.accuracy - GAP
        or val.misreads - val.sure < MIN_MISREADS
    ):
        return None
    aside = f" ({val.sure} sure misread(s) left aside as likely wrong labels)" if val.sure else ""
    return (
        f"the model reads {train.accuracy:.1%} of its {train.images:,} training images but "
        f"{val_accuracy:.1%} of its {val.images - val.sure:,} validation images{aside}: it "
        "knows the images it saw better than the style, so more labeled images should help "
        "it most (captcha-ocr label suggests them; see the README's 'More labels')"
    )
