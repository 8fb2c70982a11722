"""Robustness of ``captcha-ocr evaluate``: bad images are counted as wrong and reported, labels
the model can never output are refused, a damaged labels CSV or model is one clear error.

The bad inputs are made on the fly in ``tmp_path`` by the factories of tests/bad_inputs.py,
whose docstring says what a right answer is and what "the 8 unreadable kinds" and "the 5 odd
kinds" are.

Covered here ("elsewhere": in another test module, not repeated here):

============ ===== ==========================================================================
entry point  count bad inputs
============ ===== ==========================================================================
``evaluate`` 24    the 8 unreadable kinds among good files (counted as wrong and reported); the
                   5 odd kinds (read); unicode paths in a labels CSV; duplicate labels; a
                   non-UTF-8 file name among good ones (skipped, reported); only non-UTF-8
                   names; a folder of only unreadable files; an empty folder; a label with a
                   space; a label with a character outside the charset; a label longer than
                   the model can output; a labels CSV that is not UTF-8; a truncated ONNX
============ ===== ==========================================================================
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bad_inputs import (
    BAD_MODELS,
    NON_UTF8_NAME,
    TWINS,
    UNREADABLE,
    base_picture,
    good_images,
    plain_png,
)
from tests.helpers import fails, skipped_count, succeeds, write


@pytest.mark.parametrize("kind", UNREADABLE)
def test_evaluate_counts_and_reports_one_unreadable_image_among_good(
    kind: str, random_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    good_images(tmp_path / "data", 3)
    data, suffix = UNREADABLE[kind]()
    write(tmp_path / "data" / f"ab1{suffix}", data)
    report = tmp_path / "report.json"
    out, err = succeeds(["evaluate", random_model, tmp_path / "data", "--report", report], capsys)
    assert skipped_count(err) == 1 and "images 4" in out
    assert json.loads(report.read_text())["unreadable"] == 1


def test_evaluate_reads_odd_images(
    random_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    for i, (make, suffix) in enumerate(TWINS.values()):
        write(tmp_path / "data" / f"ab1_{i}{suffix}", make(base_picture(i))[0])
    report = tmp_path / "report.json"
    out, err = succeeds(["evaluate", random_model, tmp_path / "data", "--report", report], capsys)
    assert skipped_count(err) == 0 and f"images {len(TWINS)}" in out
    assert json.loads(report.read_text())["unreadable"] == 0


def test_evaluate_unicode_paths_in_a_labels_csv_and_duplicate_labels(
    random_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = plain_png(base_picture(7))
    write(tmp_path / "données" / "äb字.png", data)
    write(tmp_path / "données" / "copy.png", data)
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\ndonnées/äb字.png,ab12\ndonnées/copy.png,ab12\n", "utf-8")
    report = tmp_path / "rapport.json"
    out, _ = succeeds(["evaluate", random_model, labels, "--report", report], capsys)
    assert "images 2" in out
    results = json.loads(report.read_text(encoding="utf-8"))["results"]
    assert [Path(r["path"]).name for r in results] == ["äb字.png", "copy.png"]
    assert results[0]["prediction"] == results[1]["prediction"]


def test_evaluate_skips_and_reports_non_utf8_file_names(
    random_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    write(tmp_path / "data" / NON_UTF8_NAME, plain_png(base_picture(1)))
    fails(["evaluate", random_model, tmp_path / "data"], capsys, "not valid UTF-8", "rename")
    good_images(tmp_path / "data", 2)
    out, err = succeeds(["evaluate", random_model, tmp_path / "data"], capsys)
    assert "images 2" in out
    assert "1 image(s) have a file name that is not valid UTF-8" in err
    assert "ab12\\xff\\xfe.png" in err


@pytest.mark.parametrize(
    ("names", "words"),
    [
        (["ab 12.png"], ("cannot output (' ')",)),  # a space
        (["ab12.png", "abé.png"], ("cannot output ('é')", "--ignore-case")),
        (["abcd1234abcd1234abcd1234ab.png"], ("longer than the model can output", "26")),
    ],
    ids=["space", "outside-charset", "too-long"],
)
def test_evaluate_refuses_labels_the_model_can_never_output(
    names: list[str],
    words: tuple[str, ...],
    random_model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    for name in names:
        write(tmp_path / "data" / name, plain_png(base_picture()))
    fails(["evaluate", random_model, tmp_path / "data"], capsys, *words)


def test_evaluate_only_unreadable_empty_folder_bad_csv_and_model(
    random_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    for i, kind in enumerate(UNREADABLE):
        data, suffix = UNREADABLE[kind]()
        write(tmp_path / "bad" / f"ab1_{i}{suffix}", data)
    fails(["evaluate", random_model, tmp_path / "bad"], capsys, "none of the 8 image(s)")
    (tmp_path / "empty").mkdir()
    fails(["evaluate", random_model, tmp_path / "empty"], capsys, "no images found")
    latin1 = tmp_path / "labels.csv"
    latin1.write_bytes("path,label\ndonnées.png,ab12\n".encode("latin-1"))
    fails(["evaluate", random_model, latin1], capsys, "not UTF-8", "save the labels file as UTF-8")
    BAD_MODELS["truncated ONNX"][0](tmp_path / "cut.onnx")
    good_images(tmp_path / "good", 1)
    fails(["evaluate", tmp_path / "cut.onnx", tmp_path / "good"], capsys, "cut.onnx")
