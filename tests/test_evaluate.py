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


def test_evaluate_allowed_chars_restricts_the_reads(synth_dir, tmp_path) -> None:
    # The base model knows far more characters than these captchas use; evaluate
    # --allowed-chars holds its reads to the given ones, as predict does.
    import json

    from captcha_ocr.cli import main
    from tests.conftest import SYNTH_CHARSET

    allowed = SYNTH_CHARSET[1:]  # one character of the labels left out
    reports = {}
    for name, flags in (("all", []), ("held", ["--allowed-chars", allowed])):
        path = tmp_path / f"{name}.json"
        assert main(["evaluate", "base", str(synth_dir), "--report", str(path), *flags]) == 0
        reports[name] = json.loads(path.read_text())["results"]
    assert all(set(r["prediction"]) <= set(allowed) for r in reports["held"])
    left_out = [r for r in reports["all"] if SYNTH_CHARSET[0] in r["prediction"]]
    assert left_out, "the unrestricted reads never use the left-out character"
