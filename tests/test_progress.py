"""Output fit for a log file: no carriage-return redraws, TensorFlow's start-up lines once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from captcha_ocr.data import Sample, load_samples
from captcha_ocr.progress import PlainProgress, progress_bar
from captcha_ocr.synth import synthesize


def test_progress_into_a_log_file_writes_plain_lines(
    synth_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    # Captured stderr is not a terminal, as in CI, under nohup or redirected to a file.
    samples = [Sample(str(p), p.stem) for p in sorted(synth_dir.glob("*.png"))[:20]]
    load_samples(samples, 32, 100, 1, progress=True)
    synthesize(synth_dir.parent / "drawn", 3, charset="ab", size=(60, 20), progress=True)
    assert "\r" not in capsys.readouterr().err


def test_plain_progress_writes_a_line_now_and_then() -> None:
    import io

    out = io.StringIO()
    bar = PlainProgress(range(4), desc="training", unit="step", interval=0.0, file=out)
    for _ in bar:
        pass
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("training: 1/4 step (25%)")
    assert lines[-1].startswith("training: 4/4 step (100%)")
    assert "\r" not in out.getvalue()
    quiet = io.StringIO()
    with PlainProgress(total=10, desc="x", file=quiet) as bar:  # a short job: no line at all
        bar.update(10)
    assert quiet.getvalue() == ""


def test_a_disabled_bar_writes_nothing(capsys: pytest.CaptureFixture) -> None:
    for _ in progress_bar(range(3), desc="work", enabled=False):
        pass
    assert capsys.readouterr().err == ""


def test_tensorflow_start_up_lines_are_silenced() -> None:
    code = "import sys; import captcha_ocr.model; print('ok', file=sys.stderr)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "oneDNN" not in result.stderr and "absl::InitializeLog" not in result.stderr
    assert result.stderr.strip().endswith("ok")
