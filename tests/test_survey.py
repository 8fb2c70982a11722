"""``inspect`` and ``augment-preview``: the report's numbers and warnings, and the PNG grids."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captcha_ocr.cli import main
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.images import load_image
from captcha_ocr.survey import inspect_dataset
from tests.helpers import fails  # one error line, exit status 2, no traceback

# The grid layout of survey.draw_grid: an 8 px margin around tiles, a 28 px title band on top
# and an 18 px caption under each tile.
MARGIN, TITLE_H, CAPTION_H = 8, 28, 18

# A folder of four captchas: three 100x40 grey, one 120x40 RGB.
MIXED = {"ab12": (100, 40, "L"), "ab12_1": (100, 40, "L"), "ba21": (100, 40, "L")}
MIXED["cbb"] = (120, 40, "RGB")  # "b" twice: characters are counted, not labels


def _write_png(path: Path, width: int, height: int, mode: str, seed: int) -> None:
    """A light background with a few dark seeded blocks standing in for glyphs."""
    rng = np.random.default_rng(seed)
    pixels = np.full((height, width, 3), 225, np.uint8)
    for _ in range(5):
        x, y = int(rng.integers(0, width - 12)), int(rng.integers(0, height - 16))
        pixels[y : y + 16, x : x + 12] = rng.integers(0, 90, 3)
    pixels = np.clip(pixels + rng.integers(0, 20, pixels.shape), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)


def _make_folder(folder: Path, images: dict[str, tuple[int, int, str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for seed, (stem, (width, height, mode)) in enumerate(images.items()):
        _write_png(folder / f"{stem}.png", width, height, mode, seed)
    return folder


@pytest.fixture
def mixed_dir(tmp_path: Path) -> Path:
    return _make_folder(tmp_path / "mixed", MIXED)


def _tile(grid: Image.Image, index: int, columns: int, tile_w: int, tile_h: int) -> np.ndarray:
    """Pixels (H, W, 3) of tile ``index`` of a grid drawn by survey.draw_grid."""
    row, column = divmod(index, columns)
    x = MARGIN + column * (tile_w + MARGIN)
    y = TITLE_H + row * (tile_h + CAPTION_H + MARGIN)
    return np.asarray(grid.convert("RGB").crop((x, y, x + tile_w, y + tile_h)))


def _as_model_sees(folder: Path, height: int, width: int, channels: int) -> list[np.ndarray]:
    """Every image of ``folder`` through the one preprocessing path, as RGB (H, W, 3)."""
    arrays = [load_image(p, height, width, channels) for p in sorted(folder.glob("*.png"))]
    return [np.repeat(a, 3, axis=2) if channels == 1 else a for a in arrays]


def _index_of(tile: np.ndarray, candidates: list[np.ndarray]) -> int | None:
    matches = [i for i, c in enumerate(candidates) if np.array_equal(tile, c)]
    return matches[0] if matches else None


def _warning_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("warning:")]


# --- inspect_dataset -------------------------------------------------------------------------


def test_report_counts_sizes_modes_charset_and_lengths(mixed_dir: Path) -> None:
    report = inspect_dataset(mixed_dir)
    assert report.count == 4
    assert sorted(s.label for s in report.samples) == ["ab12", "ab12", "ba21", "cbb"]
    assert report.unlabeled == [] and report.unreadable == []
    assert dict(report.sizes) == {(100, 40): 3, (120, 40): 1}
    assert dict(report.modes) == {"L": 3, "RGB": 1}
    assert dict(report.characters) == {"a": 3, "b": 5, "1": 3, "2": 3, "c": 1}
    assert report.charset == "12abc"
    assert dict(report.lengths) == {4: 3, 3: 1}

    summary = report.summary()
    lines = summary.splitlines()
    assert lines[0] == f"data: {mixed_dir}"
    assert "labeled images: 4" in lines
    assert "image sizes (WxH): 100x40 (3), 120x40 (1)" in lines
    assert "image modes: L (3), RGB (1)" in lines
    assert "charset (5): '12abc'" in lines
    assert "  1:3  2:3  a:3  b:5  c:1" in lines
    # The histogram: one bar per length, the longest 30 wide, scaled to the counts.
    histogram = lines[lines.index("label lengths:") + 1 :][:2]
    assert histogram == ["    3 " + "#" * 10 + " 1", "    4 " + "#" * 30 + " 3"]
    assert "unlabeled" not in summary and "unreadable" not in summary


def test_report_warns_about_small_data_rare_characters_and_sizes(mixed_dir: Path) -> None:
    report = inspect_dataset(mixed_dir)
    warnings = report.warnings
    assert any("only 4 labeled images" in w for w in warnings), warnings
    # Rarest first, each with its count.
    rare = [w for w in warnings if w.startswith("too few examples of")]
    assert len(rare) == 1 and "'c' (1), '1' (3), '2' (3), 'a' (3), 'b' (5)" in rare[0], rare
    sizes = [w for w in warnings if "different image sizes" in w]
    assert len(sizes) == 1 and sizes[0].startswith("2 different image sizes"), warnings
    assert "(3 of 4)" in sizes[0]
    # Nothing to say about case or length here: labels of 3 and 4, all lower case.
    assert not any("both cases" in w or "every label has" in w for w in warnings), warnings
    assert _warning_lines(report.summary()) == [f"warning: {w}" for w in warnings]


def test_report_warns_about_mixed_case_one_length_and_spaces(tmp_path: Path) -> None:
    folder = _make_folder(
        tmp_path / "case",
        {"aB1": (100, 40, "L"), "Ab2": (100, 40, "L"), "ab3": (100, 40, "L")},
    )
    report = inspect_dataset(folder)
    assert report.charset == "123ABab"
    summary = report.summary()
    assert "warning: labels use both cases of 'ab'" in summary
    assert "--ignore-case" in summary
    assert "warning: every label has 3 characters" in summary
    assert "white space" not in summary

    folded = inspect_dataset(folder, ignore_case=True)
    assert folded.charset == "123ab"
    assert dict(folded.characters) == {"a": 3, "b": 3, "1": 1, "2": 1, "3": 1}
    assert "both cases" not in folded.summary()

    _write_png(folder / "a b.png", 100, 40, "L", seed=9)
    spaced = inspect_dataset(folder).summary()
    assert "warning: 1 label(s) contain white space, e.g. 'a b'" in spaced


def test_report_lists_unreadable_and_unlabeled_files(tmp_path: Path) -> None:
    folder = _make_folder(tmp_path / "bad", {"ab12": (100, 40, "L"), "cd34": (100, 40, "L")})
    (folder / "ef56.png").write_bytes(b"this is not a PNG at all" * 4)
    _write_png(folder / "not-a-label!.png", 100, 40, "L", seed=3)

    report = inspect_dataset(folder, label_pattern=r"^(?P<label>[a-z0-9]+)(?:_\d+)?$")
    assert report.count == 3  # the broken file has a good name: labeled, but unreadable
    assert [Path(p).name for p in report.unlabeled] == ["not-a-label!.png"]
    assert [Path(p).name for p, _ in report.unreadable] == ["ef56.png"]
    assert dict(report.sizes) == {(100, 40): 2}  # only the readable ones are measured
    assert dict(report.modes) == {"L": 2}

    summary = report.summary()
    assert "unlabeled (name did not match): 1, e.g. not-a-label!.png" in summary
    assert re.search(r"^unreadable: 1, e\.g\. ef56\.png: \S", summary, re.M), summary
    assert "warning: 1 image(s) did not match the label pattern and will be skipped" in summary
    assert "warning: 1 image(s) cannot be read and will be skipped" in summary


def test_report_warns_when_the_label_pattern_matches_nothing(mixed_dir: Path) -> None:
    pattern = r"^x(?P<label>\d+)$"
    report = inspect_dataset(mixed_dir, label_pattern=pattern)
    assert report.count == 0 and len(report.unlabeled) == 4
    assert report.warnings == [
        f"the label pattern {pattern!r} matched none of 4 image(s); set --label-pattern"
    ]
    summary = report.summary()
    assert "labeled images: 0" in summary
    assert f"warning: the label pattern {pattern!r} matched none of 4 image(s)" in summary


def test_report_reads_a_labels_csv(mixed_dir: Path) -> None:
    labels = mixed_dir / "labels.csv"
    labels.write_text("path,label\nab12.png,AB12\ncbb.png,cbb\nmissing.png,zz\n")
    report = inspect_dataset(labels)
    assert report.count == 3
    assert sorted(s.label for s in report.samples) == ["AB12", "cbb", "zz"]
    assert [Path(p).name for p, _ in report.unreadable] == ["missing.png"]
    assert dict(report.sizes) == {(100, 40): 1, (120, 40): 1}
    assert inspect_dataset(labels, ignore_case=True).charset == "12abcz"


def test_report_errors_on_empty_missing_and_bad_pattern(tmp_path: Path, mixed_dir: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CaptchaOCRError, match="no images found"):
        inspect_dataset(tmp_path / "empty")
    with pytest.raises(CaptchaOCRError, match="does not exist"):
        inspect_dataset(tmp_path / "nope")
    with pytest.raises(CaptchaOCRError, match="named group 'label'"):
        inspect_dataset(mixed_dir, label_pattern="(.+)")


@pytest.mark.parametrize(
    ("names", "naming", "labels"),
    [
        (["ab12.1", "ab12.2", "cd34.1"], "<label>.<k>", ["ab12", "ab12", "cd34"]),
        (["00017_ab12", "00018_cd34", "00019_ef56"], "<id>_<label>", ["ab12", "cd34", "ef56"]),
        (["captcha9f0e_ab12", "captchaa1b2_cd34"], "captcha<hash>_<label>", ["ab12", "cd34"]),
    ],
)
def test_report_names_the_label_pattern_for_common_namings(
    tmp_path: Path, names: list[str], naming: str, labels: list[str]
) -> None:
    folder = _make_folder(tmp_path / "named", {name: (100, 40, "L") for name in names})
    [hint] = [w for w in inspect_dataset(folder).warnings if naming in w]
    pattern = re.search(r"--label-pattern '(.+)'$", hint)[1]
    report = inspect_dataset(folder, label_pattern=pattern)
    assert sorted(s.label for s in report.samples) == labels
    assert not [w for w in report.warnings if "file names" in w]


def test_report_gives_no_naming_hint_for_plain_labels(mixed_dir: Path) -> None:
    assert not [w for w in inspect_dataset(mixed_dir).warnings if "look like" in w]


# --- captcha-ocr inspect ---------------------------------------------------------------------


def test_inspect_prints_the_report_and_the_upscaled_model_input(
    mixed_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    grid_path = tmp_path / "grid.png"
    assert main(["inspect", str(mixed_dir), "--grid", str(grid_path)]) == 0
    out = capsys.readouterr().out
    assert inspect_dataset(mixed_dir).summary() in out
    # 100x40 is under 48 px high, so training (and this line) scales it to 64 px high.
    model_lines = [line for line in out.splitlines() if line.startswith("model input:")]
    assert model_lines == ["model input: 160x64 px, 1 channel(s) (--width/--height change it)"], out
    assert f"sample grid: {grid_path}" in out

    # Four samples, four columns, one row; 160 px wide tiles are drawn at 1:1.
    with Image.open(grid_path) as grid:
        grid.load()
    assert grid.format == "PNG"
    assert grid.size == (4 * (160 + MARGIN) + MARGIN, TITLE_H + 64 + CAPTION_H + MARGIN)
    pixels = np.asarray(grid.convert("L"), np.float32)
    assert pixels.std() > 10 and pixels.min() < 100  # not a blank canvas
    seen = _as_model_sees(mixed_dir, 64, 160, 1)
    shown = [_index_of(_tile(grid, i, 4, 160, 64), seen) for i in range(4)]
    assert sorted(shown) == [0, 1, 2, 3], shown  # each image exactly once, as the model sees it


@pytest.mark.parametrize(
    ("flags", "width", "height", "channels"),
    [
        (["--height", "40", "--width", "100"], 100, 40, 1),
        (["--height", "40"], 100, 40, 1),  # one flag given: the other is the data's own
        (["--width", "200", "--channels", "3"], 200, 40, 3),
    ],
)
def test_inspect_size_flags_set_the_model_input(
    mixed_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    flags: list[str],
    width: int,
    height: int,
    channels: int,
) -> None:
    grid_path = tmp_path / "grid.png"
    assert main(["inspect", str(mixed_dir), "--grid", str(grid_path), *flags]) == 0
    line = f"model input: {width}x{height} px, {channels} channel(s)"
    assert line in capsys.readouterr().out
    scale = max(1, round(160 / width))  # the grid enlarges narrow inputs to see them
    with Image.open(grid_path) as grid:
        grid.load()
    columns_w = 4 * (width * scale + MARGIN) + MARGIN
    assert grid.size == (columns_w, TITLE_H + height * scale + CAPTION_H + MARGIN)
    seen = _as_model_sees(mixed_dir, height, width, channels)
    first = _tile(grid, 0, 4, width * scale, height * scale)[::scale, ::scale]
    assert _index_of(first, seen) is not None


def test_inspect_writes_inspect_png_by_default(
    mixed_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["inspect", str(mixed_dir)]) == 0
    assert "sample grid: inspect.png" in capsys.readouterr().out
    with Image.open(tmp_path / "inspect.png") as grid:
        assert grid.format == "PNG"


def test_inspect_reports_a_pattern_that_matched_nothing(
    mixed_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    grid_path = tmp_path / "grid.png"
    argv = [
        "inspect",
        str(mixed_dir),
        "--grid",
        str(grid_path),
        "--label-pattern",
        r"^x(?P<label>\d+)$",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "labeled images: 0" in out
    assert "matched none of 4 image(s); set --label-pattern" in out
    assert "model input:" not in out
    assert not grid_path.exists()


def test_inspect_shows_broken_files_in_its_output(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = _make_folder(tmp_path / "d", {"ab12": (100, 40, "L"), "cd34": (100, 40, "L")})
    (folder / "ef56.png").write_bytes(b"\x89PNG garbage")
    assert main(["inspect", str(folder), "--grid", str(tmp_path / "g.png")]) == 0
    out = capsys.readouterr().out
    assert "unreadable: 1, e.g. ef56.png" in out
    assert "warning: 1 image(s) cannot be read and will be skipped" in out
    assert "model input: 160x64 px" in out
    with Image.open(tmp_path / "g.png") as grid:
        assert grid.size[0] == 2 * (160 + MARGIN) + MARGIN  # the two good images, no empty cell


@pytest.mark.parametrize("command", ["inspect", "augment-preview"])
def test_cli_errors(
    command: str, tmp_path: Path, mixed_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    out = ["--grid" if command == "inspect" else "--out", str(tmp_path / "g.png")]
    (tmp_path / "empty").mkdir()
    fails([command, str(tmp_path / "empty"), *out], capsys, "no images found")
    fails([command, str(tmp_path / "nope"), *out], capsys, "does not exist")
    fails([command, str(mixed_dir), *out, "--label-pattern", "(.+)"], capsys, "named group 'label'")
    fails(
        [command, str(mixed_dir), *out, "--label-pattern", "(?P<label>"],
        capsys,
        "not a valid regex",
    )
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "ab12.png").write_bytes(b"not an image")
    fails([command, str(junk), *out], capsys, "none of the images", "could be read")
    assert not (tmp_path / "g.png").exists()


# --- captcha-ocr augment-preview -------------------------------------------------------------


def _preview(folder: Path, path: Path, capsys: pytest.CaptureFixture, *flags: str) -> Image.Image:
    assert main(["augment-preview", str(folder), "--out", str(path), *flags]) == 0
    assert f"augmentation preview: {path}" in capsys.readouterr().out
    with Image.open(path) as grid:
        grid.load()
    assert grid.format == "PNG"
    return grid


def _rows_of_tiles(grid: Image.Image, rows: int, variants: int) -> list[list[np.ndarray]]:
    columns = variants + 1
    return [
        [_tile(grid, r * columns + c, columns, 160, 64) for c in range(columns)]
        for r in range(rows)
    ]


def test_augment_preview_layout_originals_and_augmented_copies(
    mixed_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    always = tmp_path / "always.yaml"  # every copy augmented (a default run: half of them)
    always.write_text("augment:\n  probability: 1.0\n")
    grid = _preview(
        mixed_dir, tmp_path / "g.png", capsys, "--rows", "3", "--variants", "4",
        "--config", str(always),
    )  # fmt: skip
    # 3 rows of 1 original + 4 variants, at the upscaled model input 160x64 (1:1).
    assert grid.size == (5 * (160 + MARGIN) + MARGIN, TITLE_H + 3 * (64 + CAPTION_H + MARGIN))
    seen = _as_model_sees(mixed_dir, 64, 160, 1)
    rows = _rows_of_tiles(grid, 3, 4)
    originals = [_index_of(row[0], seen) for row in rows]
    assert None not in originals and len(set(originals)) == 3, originals  # 3 distinct samples
    augmented = [tile for row in rows for tile in row[1:]]
    changed = sum(not np.array_equal(t, row[0]) for row in rows for t in row[1:])
    assert changed == len(augmented), changed
    for row in rows:
        for tile in row[1:]:
            assert tile.std() > 5  # an image, not an empty tile


def test_augment_preview_rows_are_capped_by_the_data(
    mixed_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    grid = _preview(mixed_dir, tmp_path / "g.png", capsys, "--variants", "2")  # --rows 6 default
    assert grid.size == (3 * (160 + MARGIN) + MARGIN, TITLE_H + 4 * (64 + CAPTION_H + MARGIN))


def test_augment_preview_follows_the_config_augment_section(
    mixed_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    never = tmp_path / "never.yaml"
    never.write_text("augment:\n  probability: 0.0\n")
    grid = _preview(mixed_dir, tmp_path / "a.png", capsys, "--rows", "2", "--config", str(never))
    for row in _rows_of_tiles(grid, 2, 4):
        for tile in row[1:]:
            assert np.array_equal(tile, row[0])  # no augmentation: copies of the original

    always = tmp_path / "always.yaml"
    always.write_text("augment:\n  probability: 1.0\n")
    grid = _preview(mixed_dir, tmp_path / "b.png", capsys, "--rows", "2", "--config", str(always))
    for row in _rows_of_tiles(grid, 2, 4):
        for tile in row[1:]:
            assert not np.array_equal(tile, row[0])


def test_augment_preview_is_seeded(
    mixed_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    first = np.asarray(_preview(mixed_dir, tmp_path / "1.png", capsys, "--seed", "5"))
    again = np.asarray(_preview(mixed_dir, tmp_path / "2.png", capsys, "--seed", "5"))
    other = np.asarray(_preview(mixed_dir, tmp_path / "3.png", capsys, "--seed", "6"))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_augment_preview_uses_the_size_flags_and_the_preset_channels(
    mixed_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    flags = ("--rows", "1", "--variants", "1", "--height", "40", "--width", "100")
    grid = _preview(mixed_dir, tmp_path / "g.png", capsys, *flags)
    assert grid.size == (2 * (200 + MARGIN) + MARGIN, TITLE_H + 80 + CAPTION_H + MARGIN)
    grey = _tile(grid, 0, 2, 200, 80)
    assert (grey[..., 0] == grey[..., 2]).all()  # default preset: grey input
    # The reference preset reads RGB: the one RGB image keeps its colour in the grid.
    # Only the default preset scales small images up: tiles of 100x40, shown at 2x.
    flags = ("--rows", "4", "--variants", "0", "--preset", "reference")
    grid = _preview(mixed_dir, tmp_path / "r.png", capsys, *flags)
    assert grid.size == (200 + 2 * MARGIN, TITLE_H + 4 * (80 + CAPTION_H + MARGIN))
    tiles = [_tile(grid, i, 1, 200, 80) for i in range(4)]
    assert any((t[..., 0] != t[..., 2]).any() for t in tiles)


def test_augment_preview_without_labeled_images_is_an_error(
    mixed_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["augment-preview", str(mixed_dir), "--out", str(tmp_path / "g.png")]
    fails([*argv, "--label-pattern", r"^x(?P<label>\d+)$"], capsys, "no labeled images in")
    assert not (tmp_path / "g.png").exists()


# --- found by these tests, then fixed -------------------------------------------------------


def test_size_warning_agrees_with_the_model_input(
    mixed_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["inspect", str(mixed_dir), "--grid", str(tmp_path / "g.png")]) == 0
    out = capsys.readouterr().out
    model = re.search(r"^model input: (\d+x\d+) px", out, re.M)
    assert model and model[1] == "160x64"
    [warning] = [w for w in _warning_lines(out) if "different image sizes" in w]
    target = re.search(r"(?:resized|scaled) to\D*?(\d+x\d+)", warning)
    assert target is None or target[1] == model[1], warning


def test_augment_preview_rejects_negative_variants(
    mixed_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["augment-preview", str(mixed_dir), "--out", str(tmp_path / "g.png")]
    fails([*argv, "--variants", "-1"], capsys, "--variants")
    fails([*argv, "--rows", "0"], capsys, "--rows must be >= 1")


def test_inspect_reports_file_names_that_are_not_utf8(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "names"
    folder.mkdir()
    _write_png(tmp_path / "source.png", 100, 40, "L", seed=0)
    try:
        with open(os.fsencode(folder) + b"/\xff\xfe.png", "wb") as handle:
            handle.write((tmp_path / "source.png").read_bytes())
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    main(["inspect", str(folder), "--grid", str(tmp_path / "g.png")])
    captured = capsys.readouterr()
    assert "UTF-8" in captured.out + captured.err


# A PostScript program (EPS) that Pillow would hand to Ghostscript to draw.
EPS = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 40\n%%EndComments\n"
    b"newpath 0 0 moveto 100 40 lineto stroke\nshowpage\n%%EOF\n"
)


def test_inspect_opens_only_the_formats_training_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import EpsImagePlugin

    folder = _make_folder(tmp_path / "d", {"ab12": (100, 40, "L"), "cd34": (100, 40, "L")})
    (folder / "ef56.png").write_bytes(EPS)
    parsed = []
    parse = EpsImagePlugin.EpsImageFile._open
    monkeypatch.setattr(
        EpsImagePlugin.EpsImageFile, "_open", lambda self: (parsed.append(self), parse(self))[1]
    )
    report = inspect_dataset(folder)
    assert parsed == []  # the PostScript parser never saw the file
    assert [Path(p).name for p, _ in report.unreadable] == ["ef56.png"]
    assert dict(report.sizes) == {(100, 40): 2} and dict(report.modes) == {"L": 2}
    assert "warning: 1 image(s) cannot be read and will be skipped" in report.summary()


@pytest.mark.parametrize(
    ("flags", "model"),
    [
        ([], "160x64"),
        (["--height", "40", "--width", "100"], "100x40"),
        (["--height", "48"], "100x48"),
        (["--width", "200"], "200x40"),
        (["--preset", "reference"], "100x40"),  # only the default preset scales small images up
    ],
)
def test_size_warning_names_the_model_input_the_flags_and_preset_make(
    mixed_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, flags: list[str], model: str
) -> None:
    assert main(["inspect", str(mixed_dir), "--grid", str(tmp_path / "g.png"), *flags]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^model input: (\d+x\d+) px", out, re.M)[1] == model
    [warning] = [w for w in _warning_lines(out) if "different image sizes" in w]
    assert re.search(r"resized to (\d+x\d+)", warning)[1] == model, warning
    assert ("most common size, 100x40 (3 of 4)" in warning) == (flags[:1] in ([], ["--preset"]))


def test_inspect_dataset_sizes_the_input_as_training_does(mixed_dir: Path) -> None:
    assert inspect_dataset(mixed_dir).input_size == (160, 64)
    assert inspect_dataset(mixed_dir, preset="tiny").input_size == (100, 40)
    assert inspect_dataset(mixed_dir, height=32).input_size == (100, 32)
    assert inspect_dataset(mixed_dir, width=120, height=48).input_size == (120, 48)


def test_inspect_and_training_refuse_the_same_sources(tmp_path: Path) -> None:
    from captcha_ocr.data import find_samples

    (tmp_path / "empty").mkdir()
    (tmp_path / "rows.csv").write_text("path,label\n")
    (tmp_path / "notes.csv").mkdir()  # a folder named like a labels file
    for source in ("empty", "missing", "rows.csv", "notes.csv"):
        with pytest.raises(CaptchaOCRError) as found:
            find_samples(tmp_path / source)
        with pytest.raises(CaptchaOCRError) as inspected:
            inspect_dataset(tmp_path / source)
        assert str(inspected.value) == str(found.value), source
