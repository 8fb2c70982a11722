"""Bad input gives one clear line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from captcha_ocr.cli import main
from tests.helpers import fails


def test_missing_data_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fails(["train", str(tmp_path / "nope"), "--out", str(tmp_path)], capsys, "does not exist")


def test_empty_data_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    fails(["train", str(tmp_path / "empty"), "--out", str(tmp_path)], capsys, "no images found")


def test_no_image_matched_the_pattern(
    synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    fails(
        ["train", str(synth_dir), "--out", str(tmp_path), "--label-pattern", r"^x(?P<label>\d+)$"],
        capsys,
        "matched the label pattern",
    )


def test_bad_label_pattern(synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fails(["train", str(synth_dir), "--label-pattern", "(.+)"], capsys, "named group 'label'")


def test_unknown_config_key(synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("epochs: 3\nlearnin_rate: 0.1\n")
    fails(["train", str(synth_dir), "--config", str(config)], capsys, "learnin_rate")


def test_unknown_preset(synth_dir: Path, capsys: pytest.CaptureFixture) -> None:
    fails(["train", str(synth_dir), "--preset", "huge"], capsys, "unknown preset")


def test_corrupt_onnx_file(tmp_path: Path, synth_dir: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"this is not a protobuf" * 10)
    image = str(next(synth_dir.glob("*.png")))
    fails(["predict", str(bad), image], capsys, "not a readable ONNX model")


@pytest.mark.slow
def test_truncated_onnx_file(
    trained_run: Path, tmp_path: Path, synth_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    data = (trained_run / "model.onnx").read_bytes()
    bad = tmp_path / "cut.onnx"
    bad.write_bytes(data[: len(data) // 2])
    fails(["predict", str(bad), str(next(synth_dir.glob("*.png")))], capsys, "cut.onnx")


def test_missing_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fails(["predict", str(tmp_path / "none.onnx"), str(tmp_path)], capsys, "not found")


@pytest.mark.slow
def test_run_folder_with_missing_files(
    trained_run: Path, tmp_path: Path, synth_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "model.onnx").unlink()
    image = str(next(synth_dir.glob("*.png")))
    fails(["predict", str(run), image], capsys, "no model.onnx", "captcha-ocr export")
    (run / "configs.yaml").unlink()
    fails(["export", str(run)], capsys, "configs.yaml is missing")


@pytest.mark.slow
def test_onnx_without_our_metadata(
    trained_run: Path, tmp_path: Path, synth_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    import onnx

    proto = onnx.load(str(trained_run / "model.onnx"))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    fails(
        ["predict", str(bare), str(next(synth_dir.glob("*.png")))],
        capsys,
        "no captcha-ocr metadata",
    )


@pytest.mark.slow
def test_evaluate_labels_the_model_cannot_output(
    trained_run: Path, tmp_path: Path, synth_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    image = next(synth_dir.glob("*.png"))
    shutil.copy(image, tmp_path / "zz9.png")
    fails(["evaluate", str(trained_run), str(tmp_path)], capsys, "cannot output", "'9z'")


def test_synth_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fails(["synth", str(tmp_path), "--size", "big"], capsys, "WIDTHxHEIGHT")
    fails(["synth", str(tmp_path), "--length", "6-4"], capsys, "--length")
    fails(["synth", str(tmp_path), "--font", __file__], capsys, "not a TrueType")


def test_help_lists_every_command(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("synth", "download", "train", "export", "predict", "evaluate"):
        assert command in out
