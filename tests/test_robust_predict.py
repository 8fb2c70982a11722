"""Robustness of ``captcha-ocr predict``: bad images are skipped and counted (exit 1), alone
they are one clear error, odd images read like their twins, any file name prints.

The bad inputs are made on the fly in ``tmp_path`` by the factories of tests/bad_inputs.py,
whose docstring says what a right answer is and what "the 8 unreadable kinds" and "the 5 odd
kinds" are.

Covered here ("elsewhere": in another test module, not repeated here):

============ ===== ==========================================================================
entry point  count bad inputs
============ ===== ==========================================================================
``predict``  25    the 8 unreadable kinds among good files (skipped, counted, exit 1); the 5
                   odd kinds (same reading as their twin); unicode and non-UTF-8 file names
                   (plain and --json output); one unreadable file alone; a folder of only
                   unreadable files; an empty folder; a missing image path; --allowed-chars
                   outside the charset; a zero-byte ONNX; metadata with a repeated charset
                   character; metadata sizes that disagree with the model; a run folder
                   without configs.yaml, and with a garbage one (both read). Elsewhere:
                   random-bytes and truncated ONNX, missing model, no model.onnx, no metadata
============ ===== ==========================================================================
"""

from __future__ import annotations

import json
import shutil
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
from tests.helpers import CHARSET, fails, skipped_count, succeeds, write


@pytest.mark.parametrize("kind", UNREADABLE)
def test_predict_skips_and_reports_one_unreadable_image_among_good(
    kind: str, random_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    good = good_images(tmp_path / "images")
    data, suffix = UNREADABLE[kind]()
    bad = write(tmp_path / "images" / f"bad{suffix}", data)
    out, err = succeeds(["predict", random_model, tmp_path / "images"], capsys, status=1)
    assert sorted(line.split("\t")[0] for line in out.splitlines()) == sorted(map(str, good))
    assert f"skipped {bad}" in err and skipped_count(err) == 1


def test_predict_alone_or_only_unreadable_is_an_error(
    random_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "bad"
    for i, kind in enumerate(UNREADABLE):
        data, suffix = UNREADABLE[kind]()
        write(folder / f"bad{i}{suffix}", data)
    fails(["predict", random_model, folder], capsys, f"none of the {len(UNREADABLE)} images")
    alone = folder / "bad0.png"
    fails(["predict", random_model, alone], capsys, str(alone), "check that the files are images")


def test_predict_empty_folder_and_missing_path(
    random_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "empty").mkdir()
    fails(["predict", random_model, tmp_path / "empty"], capsys, "no images found")
    fails(["predict", random_model, tmp_path / "nope.png"], capsys, "does not exist")


def test_predict_reads_odd_images_like_their_plain_twins(
    random_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    expected = {}
    for i, (kind, (make, suffix)) in enumerate(TWINS.items()):
        data, twin = make(base_picture(10 + i))
        path = write(tmp_path / "odd" / f"odd{i}{suffix}", data)
        write(tmp_path / "twins" / f"odd{i}.png", plain_png(twin))
        expected[path.stem] = kind
    odd, _ = succeeds(["predict", random_model, tmp_path / "odd"], capsys)
    twins, _ = succeeds(["predict", random_model, tmp_path / "twins"], capsys)

    def readings(out: str) -> dict[str, list[str]]:
        rows = [line.split("\t") for line in out.splitlines()]
        return {Path(path).stem: rest for path, *rest in rows}

    assert readings(odd) == readings(twins)
    assert set(readings(odd)) == set(expected)


def test_predict_prints_unicode_and_non_utf8_file_names(
    random_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = plain_png(base_picture(6))
    write(tmp_path / "names" / "äb12_€字.png", data)
    write(tmp_path / "names" / NON_UTF8_NAME, data)
    out, _ = succeeds(["predict", random_model, tmp_path / "names"], capsys)
    lines = out.splitlines()
    assert len(lines) == 2 and "äb12_€字.png" in out and "ab12\\udcff\\udcfe.png" in out
    assert len({line.split("\t", 1)[1] for line in lines}) == 1  # same picture, same reading
    out, _ = succeeds(["predict", random_model, tmp_path / "names", "--json"], capsys)
    rows = [json.loads(line) for line in out.splitlines()]
    assert {Path(row["path"]).name for row in rows} == {"äb12_€字.png", NON_UTF8_NAME}


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("zero-byte ONNX", ("not a readable ONNX model",)),
        ("metadata charset repeats a char", ("repeats a character", "export")),
        ("metadata sizes disagree with the input", ("does not match its metadata", "export")),
    ],
)
def test_predict_refuses_a_bad_model(
    kind: str, words: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    BAD_MODELS[kind][0](tmp_path / "model.onnx")
    image = good_images(tmp_path / "images", 1)[0]
    fails(["predict", tmp_path / "model.onnx", image], capsys, *words)


def test_predict_allowed_chars_outside_the_charset(
    random_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    image = good_images(tmp_path, 1)[0]
    fails(["predict", random_model, image, "--allowed-chars", "ab?"], capsys, "'?'", CHARSET)


def test_predict_run_folder_without_or_with_a_garbage_configs_yaml(
    random_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    shutil.copytree(random_model.parent, run)
    image = good_images(tmp_path / "images", 1)[0]
    before, _ = succeeds(["predict", run, image], capsys)
    (run / "configs.yaml").write_text("model: [unclosed\n")
    after, _ = succeeds(["predict", run, image], capsys)
    assert before == after and before.count("\t") == 2
