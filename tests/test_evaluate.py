"""Report.confusions: which glyphs a model mixes up, from aligned wrong reads."""

from __future__ import annotations

from captcha_ocr.evaluate import ImageResult, Report


def report_of(pairs: list[tuple[str, str | None]]) -> Report:
    results = [
        ImageResult(f"{k}.png", label, read, 1.0, 0.0) for k, (label, read) in enumerate(pairs)
    ]
    wrong = sum(label != read for label, read in pairs)
    return Report(len(pairs), 1 - wrong / len(pairs), 0.0, wrong / len(pairs), 1.0, results=results)


def test_substitutions_are_counted_per_glyph_pair() -> None:
    report = report_of([("O1lI", "01lI"), ("gO9", "g09"), ("abc", "abc"), ("nm", "mn")])
    counts = report.confusions()
    assert counts[("O", "0")] == 2
    assert counts[("n", "m")] == 1 and counts[("m", "n")] == 1  # a swap: two misreads
    assert ("a", "a") not in counts


def test_missing_extra_and_unreadable_are_not_confusions() -> None:
    report = report_of([("abcd", "abd"), ("abc", "abcc"), ("abc", None), ("ce", "ee")])
    assert dict(report.confusions()) == {("c", "e"): 1}
