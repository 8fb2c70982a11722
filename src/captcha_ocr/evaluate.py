"""Evaluate a reader over a labeled set: CER, WER, accuracy, speed and every prediction."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from captcha_ocr.charset import Charset
from captcha_ocr.data import Sample
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.files import write_text_atomic
from captcha_ocr.infer import Reader
from captcha_ocr.metrics import char_error_rate, error_rates


@dataclass(frozen=True)
class ImageResult:
    path: str
    label: str
    prediction: str | None
    confidence: float
    cer: float
    error: str | None = None


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

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)

    def save(self, path: str | Path) -> None:
        write_text_atomic(path, self.to_json() + "\n")


def check_labels_readable(charset: Charset, samples: Sequence[Sample]) -> None:
    """Labels with characters the model cannot output make scores meaningless: refuse them."""
    bad = [(s, charset.unknown(s.label)) for s in samples if charset.unknown(s.label)]
    if bad:
        chars = "".join(sorted(set("".join(u for _, u in bad))))
        raise CaptchaOCRError(
            f"{len(bad)} label(s) have characters the model cannot output ({chars!r}), e.g. "
            f"{bad[0][0].label!r} ({bad[0][0].path}); the model's charset is {charset.chars!r}"
            " (use --ignore-case if only the case differs)"
        )


def evaluate(
    reader: Reader,
    samples: Sequence[Sample],
    batch_size: int = 64,
    beam_width: int = 1,
    progress: bool = False,
) -> Report:
    """Read every sample and score the predictions against the labels.

    Unreadable images are counted as wrong (prediction None) and reported.

    >>> report = evaluate(Reader.load("runs/x"), find_samples("data/test"))  # doctest: +SKIP
    >>> report.accuracy                                                    # doctest: +SKIP
    0.99
    """
    if not samples:
        raise CaptchaOCRError("nothing to evaluate: no labeled images")
    check_labels_readable(reader.charset, samples)
    started = time.perf_counter()
    predictions = reader.read_batch(
        [s.path for s in samples], batch_size, beam_width, skip_errors=True, progress=progress
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
    cer, wer = error_rates([r.label for r in results], [r.prediction or "" for r in results])
    return Report(
        count=len(results),
        accuracy=1.0 - wer,
        cer=cer,
        wer=wer,
        images_per_second=len(results) / max(seconds, 1e-9),
        unreadable=sum(r.error is not None for r in results),
        results=results,
    )
