"""The hint that more labels should help a run most: the rule, train's log lines, the bench."""

from __future__ import annotations

import doctest
import logging
import shutil
from pathlib import Path

import pytest

from captcha_ocr import more_labels
from captcha_ocr.evaluate import ImageResult
from captcha_ocr.more_labels import MIN_MISREADS, PartReads, count_reads, more_labels_hint
from tests.helpers import write_labels_csv, wrong_label

BENCH = Path(__file__).resolve().parents[1] / "bench"
LEARNED = PartReads("training", 2000, 4, 0)  # 99.8 %


def test_doctests_and_no_keras() -> None:
    from tests.helpers import assert_runs_without

    assert doctest.testmod(more_labels).failed == 0
    assert_runs_without(("tensorflow", "keras"), "import captcha_ocr.more_labels\n")


def test_count_reads_counts_every_misread_and_the_sure_ones() -> None:
    results = [
        ImageResult("a", "abc", "abc", 0.99, 0.0),
        ImageResult("b", "abc", "abd", 0.95, 0.33),  # sure
        ImageResult("c", "abc", "abd", 0.5, 0.33),
        ImageResult("d", "abc", "", 0.99, 1.0),  # read as nothing: a misread, never sure
        ImageResult("e", "abc", None, 0.0, 1.0, error="cannot open"),  # says nothing
    ]
    reads = count_reads("validation", results, 0.9)
    assert (reads.images, reads.misreads, reads.sure) == (4, 3, 1)
    assert reads.accuracy == pytest.approx(1 - 2 / 3)  # the sure misread left aside
    assert PartReads("validation", 0, 0, 0).accuracy == 0.0


@pytest.mark.parametrize(
    ("train", "val", "fires"),
    [
        (LEARNED, PartReads("validation", 200, 10, 0), True),  # 95 % against 99.8 %
        (LEARNED, PartReads("validation", 200, 10, 1), True),  # one sure misread aside
        (LEARNED, PartReads("validation", 200, 10, 8), False),  # wrong labels, not the style
        (LEARNED, PartReads("validation", 200, 3, 0), False),  # 98.5 %: little room left
        (LEARNED, PartReads("validation", 40, MIN_MISREADS - 1, 0), False),  # 95 %, 2 images
        (LEARNED, PartReads("validation", 40, MIN_MISREADS, 0), True),
        # Training read at 98 %: more labels are not what the model lacks ...
        (PartReads("training", 2000, 40, 0), PartReads("validation", 200, 10, 0), False),
        # ... unless those misreads are sure ones: wrong training labels, read as they show.
        (PartReads("training", 2000, 40, 38), PartReads("validation", 200, 10, 0), True),
        # 99.0 % against 97.5 %: under 2 points apart.
        (PartReads("training", 2000, 20, 0), PartReads("validation", 200, 5, 0), False),
    ],
)
def test_the_rule(train: PartReads, val: PartReads, fires: bool) -> None:
    hint = more_labels_hint(train, val)
    assert (hint is not None) == fires
    if fires:
        assert f"reads {train.accuracy:.1%} of its training images" in hint
        assert "more labeled images" in hint


def test_a_run_that_reads_its_training_images_far_better_hears_it(
    synth_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    # A run folder around the base model, which reads these synthetic captchas zero-shot:
    # training images it reads right, validation images with unsure misreads among them.
    from captcha_ocr.basemodel import BASE_DIR
    from captcha_ocr.data import find_samples
    from captcha_ocr.evaluate import evaluate
    from captcha_ocr.infer import Reader
    from captcha_ocr.runfolder import CONFIG_FILE, ONNX_FILE, TRAIN_CSV, VAL_CSV
    from captcha_ocr.suspects import CONFIDENT, find_run_suspects

    report = evaluate(Reader.load("base", threads=1), find_samples(synth_dir))
    right = sorted(
        (r for r in report.results if r.prediction == r.label), key=lambda r: -r.confidence
    )
    unsure = [r for r in report.wrong if r.prediction and r.confidence < CONFIDENT]
    assert len(unsure) >= MIN_MISREADS and len(right) >= 60, "the base model reads them otherwise"
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(BASE_DIR / ONNX_FILE, run / ONNX_FILE)
    (run / CONFIG_FILE).write_text("verdict: {usable: true, reason: ''}\n")
    write_labels_csv(run / TRAIN_CSV, [(r.path, r.label) for r in right[20:]])
    validation = [(r.path, r.label) for r in right[:20] + unsure[:MIN_MISREADS]]
    write_labels_csv(run / VAL_CSV, validation)
    monkeypatch.setattr(logging.getLogger("captcha_ocr"), "propagate", True)
    with caplog.at_level("INFO", logger="captcha_ocr"):
        find_run_suspects(run)
    assert f"{len(right) - 20:,} training images: 100.0% read as labeled" in caplog.text
    assert "hint: the model reads 100.0% of its training images" in caplog.text

    # The same validation misreads, but sure ones: wrong labels, which the list points at.
    caplog.clear()
    planted = [(r.path, wrong_label(r.label)) for r in right[:MIN_MISREADS]]
    write_labels_csv(run / VAL_CSV, [(r.path, r.label) for r in right[MIN_MISREADS:20]] + planted)
    with caplog.at_level("INFO", logger="captcha_ocr"):
        find_run_suspects(run)
    assert "read differently from their labels with confidence" in caplog.text
    assert f"({MIN_MISREADS} sure misreads left aside)" in caplog.text
    assert "hint:" not in caplog.text

    # The bench reads a kept run (real_sites.py --keep's layout) the same way.
    monkeypatch.syspath_prepend(str(BENCH))
    import more_labels_hint as bench

    write_labels_csv(run / VAL_CSV, validation)
    kept = tmp_path / "keep" / "runs" / "kept"
    (kept / "runs").mkdir(parents=True)
    (kept / "runs" / "latest").symlink_to(run)
    write_labels_csv(kept / "test.csv", [(r.path, r.label) for r in report.results])
    bench.main([str(kept), "--no-record"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("| kept | ") and last.endswith(" | yes |"), last
    assert f"| {report.accuracy:.2%} |" in last  # the held-out part: every image here
