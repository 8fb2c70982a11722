"""Smoke tests of the benchmark scripts: tiny runs that check they work and write results."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

pytestmark = pytest.mark.slow


def test_update_section_replaces_only_its_own_block(tmp_path: Path) -> None:
    from common import update_section

    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\nhand-written intro\n")
    update_section("a", "first", results)
    update_section("b", "other", results)
    update_section("a", "second", results)
    text = results.read_text()
    assert "hand-written intro" in text and "second" in text and "other" in text
    assert "first" not in text and text.count("<!-- a -->") == 1


def test_crossval_smoke(synth_dir: Path, tmp_path: Path) -> None:
    import crossval

    results = tmp_path / "RESULTS.md"
    assert (
        crossval.main(
            [
                "--data",
                str(synth_dir),
                "--preset",
                "tiny",
                "--folds",
                "3",
                "--only-folds",
                "0",
                "--epochs",
                "1",
                "--results",
                str(results),
            ]
        )
        == 0
    )
    text = results.read_text()
    assert "<!-- crossval-tiny -->" in text and "| 0 | 133 / 67 |" in text
    assert (tmp_path / "crossval_tiny.png").is_file()


def test_time_to_accuracy_smoke(synth_dir: Path, tmp_path: Path) -> None:
    import time_to_accuracy

    results = tmp_path / "RESULTS.md"
    assert (
        time_to_accuracy.main(
            [
                "--data",
                str(synth_dir),
                "--presets",
                "tiny",
                "--default-epochs",
                "1",
                "--results",
                str(results),
            ]
        )
        == 0
    )
    assert "time to CER 0.007" in results.read_text()
    assert (tmp_path / "time_to_accuracy.png").is_file()


def test_styles_smoke(tmp_path: Path) -> None:
    import styles

    results = tmp_path / "RESULTS.md"
    assert (
        styles.main(
            [
                "--styles",
                "dark",
                "--train-count",
                "200",
                "--test-count",
                "10",
                "--preset",
                "tiny",
                "--epochs",
                "1",
                "--seeds",
                "0",
                "1",
                "--results",
                str(results),
            ]
        )
        == 0
    )
    text = results.read_text()
    assert "<!-- styles-tiny-seeds -->" in text and "| per seed |" in text
    # One style (the one that needs --label-pattern) and two seeds: each more costs a
    # training and an export (~13 s); what the styles draw is tested below.
    assert "| dark |" in text and "--label-pattern" in text
    [row] = [line for line in text.splitlines() if line.startswith("| dark |")]
    assert len(re.findall(r"\d+\.\d\d% / \d+\.\d\d%", row)) == 1  # seeds 0 and 1


def test_style_effects_make_what_they_claim(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image
    from styles import STYLES, make_set

    transparent = next(s for s in STYLES if s.name == "transparent")
    folder = make_set(transparent, tmp_path / "t", 3, seed=0)
    image = Image.open(next(folder.glob("*.png")))
    assert image.mode == "P" and "transparency" in image.info
    dark = next(s for s in STYLES if s.name == "dark")
    folder = make_set(dark, tmp_path / "d", 3, seed=0)
    names = sorted(p.name for p in folder.glob("*.png"))
    assert all(n[:5].isdigit() and n[5] == "_" for n in names)
    pixels = np.asarray(Image.open(folder / names[0]).convert("L"))
    assert np.median(pixels) < 128  # light text on a dark background
    lookalikes = next(s for s in STYLES if s.name == "lookalikes")
    assert (
        lookalikes.font and len(list(make_set(lookalikes, tmp_path / "l", 3, 0).glob("*.png"))) == 3
    )


def test_int8_and_read_speed_smoke(trained_run: Path, tmp_path: Path) -> None:
    import shutil

    import int8

    from captcha_ocr.export import export_int8

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    export_int8(run)
    results = tmp_path / "RESULTS.md"
    assert (
        int8.main(
            [str(run), "--single", "20", "--batch", "8", "--rounds", "2", "--results", str(results)]
        )
        == 0
    )
    text = results.read_text()
    assert "| float |" in text and "| int8 |" in text


def test_pretrain_smoke(synth_dir: Path, tmp_path: Path) -> None:
    import pretrain

    results = tmp_path / "RESULTS.md"
    args = ["--data", str(synth_dir), "--sizes", "40", "--preset", "tiny", "--epochs", "1"]
    args += ["--pretrain-images", "40", "--pretrain-epochs", "1", "--results", str(results)]
    assert pretrain.main(args) == 0
    text = results.read_text()
    assert "<!-- pretrain -->" in text and "| 40 | none |" in text and "| 40 | synth |" in text
    assert "without pre-training" in text and (tmp_path / "pretrain.png").is_file()


def test_real_sites_smoke(synth_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """One fake "site" (a folder of labeled captchas): its held-out fifth is fixed by the
    file names, train runs as a user would run it, the table lands in RESULTS.md."""
    import shutil

    import real_sites

    site = tmp_path / "datasets" / "fake"
    shutil.copytree(synth_dir, site)
    monkeypatch.setattr(real_sites, "DATASETS", tmp_path / "datasets")
    monkeypatch.setattr(real_sites, "SITES", [real_sites.Site("fake")])
    results = tmp_path / "RESULTS.md"
    monkeypatch.setattr(real_sites, "update_section", lambda n, md: results.write_text(md))
    log = tmp_path / "rows.jsonl"
    argv = ["--sets", "fake", "--max-train", "60", "--log", str(log),
            "--variant", "one=--preset tiny --epochs 1", "--variant", "two=--preset tiny --epochs 2"]  # fmt: skip
    assert real_sites.main(argv) == 0
    names = [p.name for p in site.iterdir()]
    held = [n for n in names if real_sites.held_out(n)]
    assert 0.1 < len(held) / len(names) < 0.3  # about a fifth, by name alone
    table = results.read_text()
    assert (
        f"| fake | one | 60 | {len(held)} |" in table and "one: --preset tiny --epochs 1" in table
    )
    assert f"| fake | two | 60 | {len(held)} |" in table
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["variant"], r["epochs"]) for r in rows] == [("one", 1), ("two", 2)]
