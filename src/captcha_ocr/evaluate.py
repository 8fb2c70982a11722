"""Evaluate a reader over a labeled set: CER, WER, accuracy, speed and every prediction."""

from __future__ import annotations

import collections
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from captcha_ocr.data import Sample, check_labels_readable
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.files import write_text_atomic
from captcha_ocr.infer import Reader
from captcha_ocr.metrics import char_error_rate, error_rates, substitutions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageResult:
    path: str
    label: str
    prediction: str | None
    confidence: float
    cer: float
    error: str | None = None

    def read_otherwise(self, min_confidence: float = 0.0) -> bool:
        """Opened and read, with at least ``min_confidence``, as some text other than its
        label (an empty read says nothing about the label, so it is not one)."""
        return (
            self.error is None
            and bool(self.prediction)
            and self.prediction != self.label
            and self.confidence >= min_confidence
        )


@dataclass
class Report:
    """Scores over a labeled set. ``wer`` is the share of captchas with any error;
    ``accuracy`` = 1 - ``wer``; ``cer`` = summed edit distance / summed label length."""

    count: int
    accuracy: float
    cer: float
    wer: float
    images_per_second: float
    unreadable: int = 0
    results: list[ImageResult] = field(default_factory=list)

    @property
    def wrong(self) -> list[ImageResult]:
        return [r for r in self.results if r.prediction != r.label]

    def confusions(self) -> collections.Counter[tuple[str, str]]:
        """How often each character was read as another: ``{(label char, read char): n}``.

        Each wrong read is aligned to its label with a minimal edit alignment; only
        substitutions count: a missing or extra character is not a confusion of two glyphs.

        >>> Report(2, 0.0, 0.2, 1.0, 1.0, results=[ImageResult("a", "O1", "01", 1.0, 0.5),
        ...     ImageResult("b", "xO", "x0", 1.0, 0.5)]).confusions().most_common(1)
        [(('O', '0'), 2)]
        """
        counts: collections.Counter[tuple[str, str]] = collections.Counter()
        for r in self.wrong:
            if r.prediction is not None:
                counts.update(substitutions(r.label, r.prediction))
        return counts

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)

    def save(self, path: str | Path) -> None:
        write_text_atomic(path, self.to_json() + "\n")


def evaluate(
    reader: Reader,
    samples: Sequence[Sample],
    batch_size: int = 64,
    beam_width: int = 1,
    progress: bool = False,
    allowed_chars: str | None = None,
) -> Report:
    """Read every sample and score the predictions against the labels (with
    ``allowed_chars``, reads restricted to those characters, as :meth:`Reader.read_batch`).

    Unreadable images are counted as wrong (prediction None) and reported.

    >>> report = evaluate(Reader.load("runs/x"), find_samples("data/test"))  # doctest: +SKIP
    >>> report.accuracy                                                    # doctest: +SKIP
    0.99
    """
    if not samples:
        raise CaptchaOCRError("nothing to evaluate: no labeled images")
    check_labels_readable(reader.charset, samples, reader.time_steps)
    started = time.perf_counter()
    predictions = reader.read_batch(
        [s.path for s in samples],
        batch_size,
        beam_width,
        allowed_chars,
        skip_errors=True,
        progress=progress,
    )
    seconds = time.perf_counter() - started
    results = [
        ImageResult(
            s.path,
            s.label,
            p.text,
            round(p.confidence, 6),
            round(char_error_rate(s.label, p.text or ""), 6),
            p.error,
        )
        for s, p in zip(samples, predictions)
    ]
    unreadable = [r for r in results if r.error is not None]
    if len(unreadable) == len(results):
        raise CaptchaOCRError(
            f"none of the {len(results)} image(s) could be read, e.g. {unreadable[0].error}; "
            "check that the files are images (PNG, JPEG, ...) and not damaged"
        )
    if unreadable:
        log.warning(
            "%d of %d image(s) could not be read and count as wrong, e.g. %s",
            len(unreadable),
            len(results),
            "; ".join(r.error or "" for r in unreadable[:3]),
        )
    cer, wer = error_rates([r.label for r in results], [r.prediction or "" for r in results])
    return Report(
        count=len(results),
        accuracy=1.0 - wer,
        cer=cer,
        wer=wer,
        images_per_second=len(results) / max(seconds, 1e-9),
        unreadable=len(unreadable),
        results=results,
    )
