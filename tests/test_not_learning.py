"""A training that did not learn never passes as a success; a stuck one starts once more.

Both runs here are made to fail on purpose: labels shuffled against their images (nothing to
learn), and blank images (a loss that cannot leave the blank plateau).
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from captcha_ocr.cli import main
from captcha_ocr.cli.train_commands import NOT_LEARNED_STATUS
from captcha_ocr.config import load_run_verdict
from captcha_ocr.data import find_samples
from captcha_ocr.metadata import NOT_USABLE_KEY

pytestmark = pytest.mark.slow


def write_csv(rows: list[tuple[str, str]], path: Path) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    return path


def test_shuffled_labels_end_with_the_not_learned_status(
    synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    samples = find_samples(synth_dir)
    labels = [s.label for s in samples]
    random.Random(0).shuffle(labels)
    data = write_csv([(s.path, label) for s, label in zip(samples, labels)], tmp_path / "d.csv")
    argv = ["train", str(data), "--out", str(tmp_path / "runs"), "--preset", "tiny"]
    status = main([*argv, "--epochs", "6", "--quiet", "--min-accuracy", "0.5", "--no-rescue"])
    assert status == NOT_LEARNED_STATUS == 3
    err = capsys.readouterr().err
    assert "the run did not learn" in err and "What to try" in err
    run = (tmp_path / "runs" / "latest").resolve()
    usable, reason = load_run_verdict(run)
    assert not usable and "under the 50% floor" in reason
    import onnxruntime as ort

    metadata = ort.InferenceSession(str(run / "model.onnx")).get_modelmeta().custom_metadata_map
    assert metadata[NOT_USABLE_KEY] == reason
    assert main(["predict", str(run), str(samples[0].path)]) == 0  # it reads, and warns
    assert "marked not usable" in capsys.readouterr().err


def test_a_run_that_learns_is_usable(trained_run: Path) -> None:
    usable, reason = load_run_verdict(trained_run)  # tiny preset: no floor
    assert usable and reason == ""


def test_a_stuck_run_starts_once_more_with_synthetic_pretraining(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "blank"
    folder.mkdir()
    rng = random.Random(1)
    rows = []
    for k in range(48):  # every image the same: nothing to read, the loss stays flat
        path = folder / f"{k}.png"
        Image.fromarray(np.full((32, 100), 200, np.uint8)).save(path)
        rows.append((str(path), "".join(rng.choice("ab") for _ in range(3))))
    data = write_csv(rows, tmp_path / "d.csv")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"rescue": True, "pretrain_images": 24, "pretrain_epochs": 1}))
    argv = ["train", str(data), "--out", str(tmp_path / "runs"), "--preset", "tiny"]
    status = main([*argv, "--epochs", "16", "--quiet", "--config", str(config)])
    assert status == 0  # tiny: no accuracy floor
    run = (tmp_path / "runs" / "latest").resolve()
    err = capsys.readouterr().err
    assert "stuck on the CTC blank plateau" in err and "pretrain=synth" in err
    stuck = run / "stuck-attempt"
    first = json.loads((stuck / "state.json").read_text())
    assert first["stuck"] and "blank plateau" in first["stop_reason"]
    assert (stuck / "history.csv").is_file() and (stuck / "model.keras").is_file()
    assert first["epochs_done"] < 16  # stopped at the stuck verdict, not at the budget's end
    document = yaml.safe_load((run / "configs.yaml").read_text())
    assert document["train"]["pretrain"] == "synth" and document["train"]["rescue"] is False
    assert (run / "pretrain" / "history.csv").is_file()  # the remedy ran
    second = json.loads((run / "state.json").read_text())
    assert second["epochs_done"] == 16  # no second rescue: it trained its whole budget
