"""Synthesize -> train (CLI) -> export with parity -> read through the API and the CLI."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from captcha_ocr import Prediction, Reader
from captcha_ocr.cli import main
from captcha_ocr.config import INT8_MAX_ACCURACY_DROP, load_run_config
from tests.helpers import assert_runs_without

pytestmark = pytest.mark.slow

RUN_FILES = [
    "configs.yaml",
    "train.csv",
    "val.csv",
    "history.csv",
    "model.keras",
    "last.keras",
    "state.json",
    "model.onnx",
    "curves.png",
]


def test_run_folder_describes_itself(trained_run: Path, synth_dir: Path) -> None:
    for name in RUN_FILES:
        assert (trained_run / name).is_file(), name
    assert any((trained_run / "logs").rglob("*")), "no TensorBoard logs"
    spec, config, data = load_run_config(trained_run)
    assert spec.charset == "1234abcd"
    assert (spec.width, spec.height, spec.channels) == (100, 32, 1)
    assert spec.max_label_length == 5
    assert config.preset == "tiny" and config.epochs == 4 and config.seed == 3
    assert data["count"] == 200
    with open(trained_run / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"]), "the training loss did not go down"
    for row in rows:  # the share of validation captchas read exactly right
        assert float(row["val_acc"]) == pytest.approx(1 - float(row["val_wer"]))
    train_rows = (trained_run / "train.csv").read_text().splitlines()[1:]
    val_rows = (trained_run / "val.csv").read_text().splitlines()[1:]
    assert len(train_rows) + len(val_rows) == 200 and len(val_rows) == 20
    assert not set(train_rows) & set(val_rows)


def test_onnx_metadata_and_dynamic_batch(trained_run: Path) -> None:
    import onnx

    proto = onnx.load(str(trained_run / "model.onnx"))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["charset"] == "1234abcd" and meta["blank_index"] == "0"
    assert (meta["input_height"], meta["input_width"], meta["input_channels"]) == ("32", "100", "1")
    assert json.loads(meta["captcha_ocr"])["version"]
    reader = Reader.load(trained_run)
    for batch in (1, 3, 7):
        out = reader.log_probs(np.zeros((batch, 32, 100, 1), np.float32))
        assert out.shape == (batch, 25, 9)
        np.testing.assert_allclose(np.exp(out).sum(-1), 1.0, atol=1e-4)


def test_the_export_reads_raw_pixels_without_a_scaling_step(trained_run: Path) -> None:
    import onnx

    graph = onnx.load(str(trained_run / "model.onnx")).graph
    image = graph.input[0].name
    first = [node.op_type for node in graph.node if image in node.input]
    assert first and "Mul" not in first, first  # the 1/255 lives in the first kernels


def test_reader_reads_every_kind_of_input(trained_run: Path, synth_dir: Path) -> None:
    from PIL import Image

    reader = Reader.load(trained_run)
    path = sorted(synth_dir.glob("*.png"))[0]
    from_path = reader.read(path)
    assert isinstance(from_path, Prediction) and 0.0 <= from_path.confidence <= 1.0
    assert set(from_path.text) <= set(reader.charset.chars)
    assert reader.read(str(path)) == from_path
    assert reader.read(path.read_bytes()) == from_path
    assert reader.read(Image.open(path)) == from_path
    assert reader.read(np.asarray(Image.open(path).convert("RGB"))).text == from_path.text
    batch = reader.read_batch([path] * 5, batch_size=2)
    assert [p.text for p in batch] == [from_path.text] * 5
    beam = reader.read(path, beam_width=5)
    assert beam.confidence >= from_path.confidence - 1e-6  # a sum over paths >= the best path
    only = reader.read(path, allowed_chars="ab")
    assert set(only.text) <= {"a", "b"}


def test_read_batch_reports_unreadable_images(
    trained_run: Path, synth_dir: Path, tmp_path: Path
) -> None:
    from captcha_ocr.images import ImageLoadError

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    good = sorted(synth_dir.glob("*.png"))[0]
    reader = Reader.load(trained_run)
    results = reader.read_batch([good, bad, good], skip_errors=True)
    assert results[0].text is not None and results[2].text == results[0].text
    assert results[1].text is None and "broken.png" in results[1].error
    with pytest.raises(ImageLoadError):
        reader.read_batch([good, bad])


def test_parity_check_fails_loudly_when_outputs_differ(trained_run: Path, tmp_path: Path) -> None:
    from captcha_ocr.export import ParityError, check_parity
    from captcha_ocr.model import build_model

    spec, _, _ = load_run_config(trained_run)
    other = build_model(spec)  # fresh weights: not the exported network
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 100, 1)).astype(np.uint8)
    with pytest.raises(ParityError, match="differs"):
        check_parity(other, trained_run / "model.onnx", images)


def test_export_command_matches_keras(trained_run: Path, capsys: pytest.CaptureFixture) -> None:
    from captcha_ocr.export import check_parity
    from captcha_ocr.model import load_best_model

    before = (trained_run / "model.onnx").stat().st_mtime_ns
    assert main(["export", str(trained_run)]) == 0
    assert (trained_run / "model.onnx").stat().st_mtime_ns >= before
    images = np.random.default_rng(1).integers(0, 256, (8, 32, 100, 1)).astype(np.uint8)
    assert check_parity(load_best_model(trained_run), trained_run / "model.onnx", images) < 1e-4


def test_cli_predict_and_evaluate(
    trained_run: Path, synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    images = sorted(synth_dir.glob("*.png"))[:3]
    assert main(["predict", str(trained_run / "model.onnx"), *map(str, images)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith(str(images[0]))
    assert main(["predict", str(trained_run), str(images[0]), "--json", "--beam-width", "3"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert set(record) == {"path", "text", "confidence"}

    report_path = tmp_path / "report.json"
    assert (
        main(
            [
                "evaluate",
                str(trained_run),
                str(trained_run / "val.csv"),
                "--report",
                str(report_path),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "accuracy" in out and "CER" in out and "img/s" in out
    report = json.loads(report_path.read_text())
    assert {"count", "accuracy", "cer", "wer", "images_per_second", "results"} <= set(report)
    assert report["count"] == 20 and abs(report["accuracy"] + report["wer"] - 1) < 1e-9
    assert set(report["results"][0]) >= {"path", "label", "prediction", "confidence", "cer"}


def test_reader_does_not_import_tensorflow(trained_run: Path, synth_dir: Path) -> None:
    image = sorted(synth_dir.glob("*.png"))[0]
    code = (
        "from captcha_ocr import Reader\n"
        f"r = Reader.load({str(trained_run)!r})\n"
        f"print(r.read({str(image)!r}).text)\n"
    )
    assert_runs_without(("tensorflow", "keras", "tf2onnx"), code)


def test_python_dash_m_works() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "captcha_ocr", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "train" in result.stdout and "predict" in result.stdout


def test_int8_export_is_kept_only_within_the_accuracy_limit(
    trained_run: Path, tmp_path: Path
) -> None:
    import shutil

    import onnx

    from captcha_ocr.export import export_int8

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    path, float_accuracy, int8_accuracy = export_int8(run)
    assert path == run / "model.int8.onnx" and path.is_file()
    assert abs(float_accuracy - int8_accuracy) <= INT8_MAX_ACCURACY_DROP
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["quantization"] == "int8" and meta["charset"] == "1234abcd"
    assert Reader.load(path).read(np.zeros((32, 100, 1), np.uint8)).text is not None
    path.unlink()
    # A limit no model can meet: the candidate is measured, then thrown away.
    rejected, _, _ = export_int8(run, max_drop=-1.0)
    assert rejected is None and not (run / "model.int8.onnx").exists()
    assert not list(run.glob(".model.int8*"))
