"""Smoke test of bench/labeling.py: a simulated person labels a tiny synthetic set through the
JSON API of `captcha-ocr label`, one tiny round, and the table and plot are written."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

pytestmark = pytest.mark.slow


def test_labeling_smoke(synth_dir: Path, tmp_path: Path) -> None:
    import labeling

    results = tmp_path / "RESULTS.md"
    argv = ["--data", str(synth_dir), "--round-size", "12", "--max-labels", "14"]
    argv += ["--train-args=--preset tiny --epochs 1", "--first-round-args="]
    argv += ["--results", str(results), "--section", "labeling-smoke"]
    assert labeling.main(argv) == 0
    text = results.read_text()
    assert (
        "<!-- labeling-smoke -->" in text and "| mix | 1 | 12 | 12 |" in text
    )  # no model: all typed
    assert "97% not reached" in text and "labeling-smoke.png" in text
    assert (tmp_path / "labeling-smoke.png").is_file()
