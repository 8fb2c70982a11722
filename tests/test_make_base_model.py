"""scripts/make_base_model.py: its drawings make images of the size asked with the label's
ink on them, and a drawn set is the same for the same seed."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_base_model.py"

pytest.importorskip("captcha", reason="the base model's drawings use the captcha package")


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("make_base_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    # Registered by name: draw_set hands draw_one to a process pool, which pickles it so.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_each_drawing_inks_an_image_of_the_size_asked(script, index: int) -> None:
    draw = script.DRAWINGS[index]
    fonts = script.font_files()
    for seed, size in enumerate([(200, 80), (70, 25), (240, 50)]):
        rng = np.random.default_rng(seed)
        image = draw("a7Kx9q", size, fonts, rng)
        assert image.size == size and image.mode == "RGB"
        grey = np.asarray(image.convert("L"), np.float32)
        assert grey.std() > 10, f"{draw.__name__} drew a flat image"
    assert len(script.DRAWINGS) == len(script.DRAWING_SHARES)
    assert sum(script.DRAWING_SHARES) == pytest.approx(1.0)


def test_the_securimage_look_is_grey_with_many_lines(script) -> None:
    """Grey text under lines in greys (no colour), as PHP Securimage draws them."""
    rng = np.random.default_rng(3)
    image = script.draw_securimage_style("0g5h2k", (200, 80), script.font_files(), rng)
    pixels = np.asarray(image, np.int16)
    assert np.all(pixels[..., 0] == pixels[..., 1]) and np.all(pixels[..., 1] == pixels[..., 2])
    dark = np.asarray(image.convert("L")) < 200
    assert 0.05 < dark.mean() < 0.6
    assert dark[:, :40].any() or dark[:, -40:].any()  # lines run beyond the text


def test_a_drawn_set_is_the_same_for_the_same_seed(script, tmp_path: Path) -> None:
    first = script.draw_set(tmp_path / "a", 12, seed=5)
    second = script.draw_set(tmp_path / "b", 12, seed=5)
    rows = list(csv.DictReader(first.open()))
    assert rows == list(csv.DictReader(second.open())) and len(rows) == 12
    for row in rows:
        assert 3 <= len(row["label"]) <= 8
        a, b = (first.parent / row["path"]).read_bytes(), (second.parent / row["path"]).read_bytes()
        assert a == b
