"""`captcha-ocr train` refuses what cannot work before it makes a run folder (no training here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from captcha_ocr.config import resolve_train_config
from captcha_ocr.errors import CaptchaOCRError
from tests.helpers import fails


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"pretrain_images": 0}, "pretrain_images must be >= 2"),
        ({"pretrain_epochs": 0}, "pretrain_epochs must be >= 1"),
        ({"plateau_factor": 0.0}, "plateau_factor must be between 0 and 1"),
        ({"plateau_factor": 1.5}, "plateau_factor must be between 0 and 1"),
        ({"plateau_patience": 0}, "plateau_patience must be >= 1"),
        ({"warmup_epochs": -1.0}, "warmup_epochs must be >= 0"),
        ({"time_limit": 0.0}, "time_limit must be > 0"),
        ({"time_limit": -5.0}, "time_limit must be > 0"),
        ({"weight_decay": -0.1}, "weight_decay must be >= 0"),
    ],
)
def test_every_training_setting_is_checked(overrides: dict, message: str) -> None:
    with pytest.raises(CaptchaOCRError, match=message):
        resolve_train_config("default", cli_overrides=overrides)


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--pretrain", "synth", "--pretrain-images", "0"], ("pretrain_images must be >= 2",)),
        (["--time-limit", "0"], ("time_limit must be > 0",)),
    ],
)
def test_bad_settings_fail_before_a_run_folder_exists(
    flags: list[str], words: tuple[str, ...], synth_dir: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "runs"
    fails(["train", str(synth_dir), "--out", str(out), "--quiet", *flags], capsys, *words)
    assert not out.exists()


def test_resume_refuses_the_flags_it_would_ignore(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    argv = ["train", "data", "--resume", str(run), "--lr", "0.1", "--config", "c.yaml"]
    line = fails([*argv, "--ignore-case", "--out", "elsewhere"], capsys, "--resume")
    for flag in ("DATA", "--lr", "--config", "--ignore-case", "--out"):
        assert flag in line
    assert "only --epochs and --devices can" in line  # what can change is named too
    fails(["train", "--resume", str(run), "--preset", "tiny"], capsys, "--preset")


def test_resume_with_only_its_own_flags_is_not_refused(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    argv = ["train", "--resume", str(run), "--epochs", "5", "--devices", "1", "--quiet"]
    fails(argv, capsys, "configs.yaml is missing")  # got as far as reading the run folder


def test_dry_run_prints_the_plan_and_trains_nothing(
    synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """What adapts to the data, as train would choose it; no run folder is made."""
    from captcha_ocr.cli import main
    from captcha_ocr.epochs import batches_per_epoch

    out = tmp_path / "runs"
    assert main(["train", str(synth_dir), "--out", str(out), "--dry-run", "--init", "none"]) == 0
    printed = dict(
        line.split(": ", 1) for line in capsys.readouterr().out.splitlines() if ": " in line
    )
    assert not out.exists()
    assert printed["images"] == "180 training, 20 validation"
    assert printed["label lengths"] == "3 to 5" and printed["data size"] == "100x32"
    # 32 px high: scaled to 64 (presets.SMALL_IMAGES); 200 px for 5 characters: 4 px steps
    assert printed["model input"] == "200x64, 1 channel(s)"
    assert printed["time steps"] == "50 (one per 4 px)"
    assert printed["start"] == "random weights" and printed["batch size"] == "32"
    epochs = int(printed["epochs"].split()[0])
    assert printed["epochs"] == f"{epochs} ({epochs * batches_per_epoch(180, 32)} optimizer steps)"


def test_dry_run_of_a_resumed_run_is_refused(
    trained_run: Path, capsys: pytest.CaptureFixture
) -> None:
    fails(["train", "--resume", str(trained_run), "--dry-run"], capsys, "plans a new run")
