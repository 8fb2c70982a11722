"""Labeled samples: label rules, folder scans, labels files, splits, loading, synthetic data."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captcha_ocr.data import (
    Sample,
    collect_samples,
    compile_label_pattern,
    find_samples,
    label_from_name,
    load_samples,
    most_common_size,
    read_labels_file,
    scan_folder,
    split_samples,
    write_samples_csv,
)
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.sizes import ImageSize
from captcha_ocr.synth import (
    estimate_colours,
    parse_length_range,
    parse_size,
    synth_safe_chars,
    synthesize,
)


def write_png(path: Path, size=(20, 10), value=128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, value).save(path, format="PNG")
    return path


def label_of(name: str, pattern: str | None = None, ignore_case: bool = False) -> str | None:
    return label_from_name(name, compile_label_pattern(pattern), ignore_case)


# --- label rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("2b827.png", "2b827"),
        ("2b827_3.png", "2b827"),
        ("sub/2b827_12.jpg", "2b827"),
        ("0042.png", "0042"),  # leading zeros kept: labels are strings
        ("0042_7.png", "0042"),
        ("007.png", "007"),
        ("ab_cd.png", "ab_cd"),  # "_cd" is not a repeat number
        ("a.b.png", "a.b"),  # only the last suffix is removed
    ],
)
def test_default_label_pattern(name, label):
    assert label_of(name) == label


@pytest.mark.parametrize(
    ("pattern", "name", "label"),
    [
        (r"^\d+_(?P<label>\w+)$", "17_ab3.png", "ab3"),  # <id>_<label>.png
        (r"^\d+_(?P<label>\w+)$", "0003_0042.png", "0042"),
        (r"^(?P<label>.+)\.\d+$", "x7k2p.3.png", "x7k2p"),  # <label>.<k>.png
        (r"^captcha[0-9a-f]+_(?P<label>.+)$", "captcha9f3a0c_mw4ex.png", "mw4ex"),
    ],
)
def test_custom_label_pattern(pattern, name, label):
    assert label_of(name, pattern) == label


@pytest.mark.parametrize(
    ("pattern", "name"),
    [
        (r"^\d+_(?P<label>\w+)$", "ab3.png"),
        (r"^(?P<label>.+)\.\d+$", "x7k2p.png"),
        (r"^captcha[0-9a-f]+_(?P<label>.+)$", "image_mw4ex.png"),
        (r"^(?P<label>\w*)_x$", "_x.png"),  # an empty label is no label
    ],
)
def test_custom_label_pattern_no_match(pattern, name):
    assert label_of(name, pattern) is None


def test_pattern_without_label_group():
    with pytest.raises(CaptchaOCRError, match="named group 'label'"):
        compile_label_pattern(r"^(.+)_\d+$")
    with pytest.raises(CaptchaOCRError, match="named group 'label'"):
        compile_label_pattern(r"^(?P<text>.+)$")


@pytest.mark.parametrize("pattern", ["(?P<label>.+", "[a-", "(?P<label>*)"])
def test_invalid_regex(pattern):
    with pytest.raises(CaptchaOCRError, match="not a valid regex"):
        compile_label_pattern(pattern)


def test_ignore_case_folds_to_lower():
    assert label_of("AbC9x_2.png") == "AbC9x"
    assert label_of("AbC9x_2.png", ignore_case=True) == "abc9x"
    assert label_of("12_XyZ.png", r"^\d+_(?P<label>\w+)$", ignore_case=True) == "xyz"


# --- scanning a folder ---------------------------------------------------------------------


def test_scan_folder_is_recursive_and_sorted(tmp_path):
    for name in ["b/zz.png", "a/yy.png", "mm.png", "a/deeper/aa_1.jpg", "c.png"]:
        write_png(tmp_path / name)
    (tmp_path / "labels.txt").write_text("not an image")
    (tmp_path / "a" / "notes.md").write_text("nor this")
    scan = scan_folder(tmp_path)
    paths = [s.path for s in scan.samples]
    assert paths == sorted(paths)
    assert [Path(p).relative_to(tmp_path).as_posix() for p in paths] == [
        "a/deeper/aa_1.jpg",
        "a/yy.png",
        "b/zz.png",
        "c.png",
        "mm.png",
    ]
    assert [s.label for s in scan.samples] == ["aa", "yy", "zz", "c", "mm"]
    assert scan.unlabeled == []


def test_scan_folder_reports_unlabeled(tmp_path):
    write_png(tmp_path / "3_ab.png")
    write_png(tmp_path / "1_cd.png")
    write_png(tmp_path / "stray.png")
    scan = scan_folder(tmp_path, r"^\d+_(?P<label>\w+)$")
    assert [s.label for s in scan.samples] == ["cd", "ab"]
    assert scan.unlabeled == [str(tmp_path / "stray.png")]


def test_find_samples_missing_folder(tmp_path):
    with pytest.raises(CaptchaOCRError, match="does not exist"):
        find_samples(tmp_path / "nope")


def test_find_samples_empty_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(CaptchaOCRError, match="no images found"):
        find_samples(tmp_path)


def test_find_samples_nothing_matched(tmp_path, caplog):
    write_png(tmp_path / "abc.png")
    write_png(tmp_path / "def.png")
    with (
        caplog.at_level(logging.WARNING, logger="captcha_ocr.data"),
        pytest.raises(CaptchaOCRError, match=r"matched the label pattern.*--label-pattern"),
    ):
        find_samples(tmp_path, r"^\d+_(?P<label>\w+)$")
    assert "2 image(s) did not match" in caplog.text


def test_find_samples_file_that_is_not_a_labels_file(tmp_path):
    path = write_png(tmp_path / "one.png")
    with pytest.raises(CaptchaOCRError, match="not a folder"):
        find_samples(path)


def test_collect_samples_keeps_what_it_could_not_label(tmp_path):
    write_png(tmp_path / "1_ab.png")
    write_png(tmp_path / "stray.png")
    scan = collect_samples(tmp_path, r"^\d+_(?P<label>\w+)$")
    assert [s.label for s in scan.samples] == ["ab"]
    assert scan.unlabeled == [str(tmp_path / "stray.png")]
    nothing = collect_samples(tmp_path, r"^x(?P<label>\d+)$")  # not an error here...
    assert nothing.samples == [] and len(nothing.unlabeled) == 2
    with pytest.raises(CaptchaOCRError, match="matched the label pattern"):
        find_samples(tmp_path, r"^x(?P<label>\d+)$")  # ... but nothing to train on is
    (tmp_path / "labels.csv").write_text("1_ab.png,zz\n")
    assert collect_samples(tmp_path / "labels.csv").samples == [
        Sample(str(tmp_path / "1_ab.png"), "zz")
    ]


def test_find_samples_from_folder(tmp_path):
    write_png(tmp_path / "0042.png")
    write_png(tmp_path / "0042_1.png")
    samples = find_samples(tmp_path)
    assert [s.label for s in samples] == ["0042", "0042"]
    assert all(isinstance(s.label, str) for s in samples)


# --- labels files --------------------------------------------------------------------------


def test_read_labels_csv(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    absolute = tmp_path / "elsewhere.png"
    (folder / "labels.csv").write_text(
        f"path,label\nimgs/a.png,007\nb.png, x9 \n\n{absolute},AbC\n", encoding="utf-8"
    )
    samples = read_labels_file(folder / "labels.csv")
    assert samples == [
        Sample(str(folder / "imgs" / "a.png"), "007"),
        Sample(str(folder / "b.png"), "x9"),
        Sample(str(absolute), "AbC"),
    ]
    assert read_labels_file(folder / "labels.csv", ignore_case=True)[2].label == "abc"


def test_read_labels_tsv_with_bom_and_no_header(tmp_path):
    (tmp_path / "labels.tsv").write_text("a,1.png\t0042\nb.png\tzz\n", encoding="utf-8-sig")
    samples = read_labels_file(tmp_path / "labels.tsv")
    assert samples == [
        Sample(str(tmp_path / "a,1.png"), "0042"),
        Sample(str(tmp_path / "b.png"), "zz"),
    ]


def test_header_only_first_row(tmp_path):
    # A later row that reads "path,label" is data, not a header.
    (tmp_path / "l.csv").write_text("path,label\nx.png,1\npath,label\n")
    assert [s.label for s in read_labels_file(tmp_path / "l.csv")] == ["1", "label"]


def test_labels_file_bad_row_names_the_line(tmp_path):
    (tmp_path / "l.csv").write_text("path,label\na.png,ab\nlonely.png\n")
    with pytest.raises(CaptchaOCRError, match=r"l.csv:3"):
        read_labels_file(tmp_path / "l.csv")


def test_labels_file_missing_or_empty(tmp_path):
    with pytest.raises(CaptchaOCRError, match="does not exist"):
        read_labels_file(tmp_path / "none.csv")
    (tmp_path / "empty.csv").write_text("path,label\n")
    with pytest.raises(CaptchaOCRError, match="no rows"):
        find_samples(tmp_path / "empty.csv")


def test_find_samples_reads_a_labels_file(tmp_path):
    (tmp_path / "labels.csv").write_text("x.png,007\n")
    assert find_samples(tmp_path / "labels.csv") == [Sample(str(tmp_path / "x.png"), "007")]


def test_write_samples_csv_round_trip(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    samples = [
        Sample("rel/a.png", "007"),
        Sample(str(tmp_path / "b.png"), "a,b"),
        Sample("c d.png", 'q"t'),
        Sample("e.png", "0"),
    ]
    out = tmp_path / "out" / "samples.csv"
    write_samples_csv(out, samples)
    assert out.read_text().startswith("path,label\n")
    back = read_labels_file(out)
    assert [s.label for s in back] == [s.label for s in samples]
    assert [s.path for s in back] == [str(Path(s.path).resolve()) for s in samples]
    # Absolute paths: the same samples from another working folder.
    monkeypatch.chdir(tmp_path / "out")
    assert read_labels_file(out) == back


# --- splitting -----------------------------------------------------------------------------


def make_samples(n: int) -> list[Sample]:
    return [Sample(f"{i}.png", str(i)) for i in range(n)]


def test_split_is_deterministic_disjoint_and_complete():
    samples = make_samples(50)
    train, val = split_samples(samples, 0.2, seed=3)
    assert (train, val) == split_samples(samples, 0.2, seed=3)
    assert len(val) == 10
    assert len(train) == 40
    assert not set(train) & set(val)
    assert set(train) | set(val) == set(samples)
    # Each part keeps the original order.
    assert train == [s for s in samples if s in set(train)]
    assert val == [s for s in samples if s in set(val)]


def test_split_depends_on_the_seed():
    samples = make_samples(50)
    vals = {tuple(split_samples(samples, 0.2, seed=seed)[1]) for seed in range(4)}
    assert len(vals) == 4


@pytest.mark.parametrize(("n", "fraction"), [(2, 0.1), (10, 0.01), (10, 0.0), (3, 0.99)])
def test_split_keeps_at_least_one_of_each(n, fraction):
    train, val = split_samples(make_samples(n), fraction, seed=0)
    assert len(val) >= 1
    assert len(train) >= 1
    assert len(train) + len(val) == n


def test_split_needs_two_samples():
    with pytest.raises(CaptchaOCRError, match="at least 2"):
        split_samples(make_samples(1), 0.1, seed=0)


# --- loading pixels ------------------------------------------------------------------------


def test_load_samples_skips_and_reports_unreadable(tmp_path, caplog):
    good = [Sample(str(write_png(tmp_path / f"g{i}.png", value=10 * i)), f"g{i}") for i in range(3)]
    (tmp_path / "bad.png").write_bytes(b"")
    bad = Sample(str(tmp_path / "bad.png"), "bad")
    missing = Sample(str(tmp_path / "missing.png"), "missing")
    samples = [good[0], bad, good[1], missing, good[2]]
    with caplog.at_level(logging.WARNING, logger="captcha_ocr.data"):
        loaded = load_samples(samples, 8, 16, 1, workers=2)
    assert loaded.images.shape == (3, 8, 16, 1)
    assert loaded.images.dtype == np.uint8
    assert loaded.samples == good
    assert [img[0, 0, 0] for img in loaded.images] == [0, 10, 20]  # order kept
    assert [path for path, _ in loaded.failed] == [bad.path, missing.path]
    assert "no such file" in loaded.failed[1][1]
    assert "2 of 5 image(s) could not be read" in caplog.text


def test_load_samples_strict_raises(tmp_path):
    good = Sample(str(write_png(tmp_path / "g.png")), "g")
    (tmp_path / "bad.png").write_text("text")
    with pytest.raises(CaptchaOCRError, match=r"1 of 2 image.*bad\.png.*--strict"):
        load_samples(
            [good, Sample(str(tmp_path / "bad.png"), "b")], 8, 16, 1, strict=True, workers=2
        )


def test_load_samples_none_readable(tmp_path):
    with pytest.raises(CaptchaOCRError, match="none of the 1"):
        load_samples([Sample(str(tmp_path / "x.png"), "x")], 8, 16, 1, workers=1)


def test_most_common_size(tmp_path):
    samples = [
        Sample(str(write_png(tmp_path / f"{i}.png", size=size)), "x")
        for i, size in enumerate([(30, 10), (20, 10), (30, 10)])
    ]
    (tmp_path / "bad.png").write_text("x")
    samples.append(Sample(str(tmp_path / "bad.png"), "x"))
    assert most_common_size(samples) == (30, 10)
    assert most_common_size(samples) == ImageSize(width=30, height=10)
    with pytest.raises(CaptchaOCRError, match="none of the images"):
        most_common_size(samples[-1:])


# --- command-line value parsers ------------------------------------------------------------


@pytest.mark.parametrize(("text", "lengths"), [("5", (5, 5)), ("4-6", (4, 6)), ("1-1", (1, 1))])
def test_parse_length_range(text, lengths):
    assert parse_length_range(text) == lengths


@pytest.mark.parametrize("text", ["", "a", "4-x", "-3", "0", "6-4", "0-3", "1.5"])
def test_parse_length_range_bad(text):
    with pytest.raises(CaptchaOCRError, match="--length"):
        parse_length_range(text)


@pytest.mark.parametrize(
    ("text", "size"), [("200x50", (200, 50)), ("128X32", (128, 32)), (" 16 x 16 ", (16, 16))]
)
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["200", "200x", "x50", "200*50", "axb", "200x50x3", "-200x50"])
def test_parse_size_bad(text):
    with pytest.raises(CaptchaOCRError, match="WIDTHxHEIGHT"):
        parse_size(text)


@pytest.mark.parametrize("text", ["15x50", "200x8", "0x0"])
def test_parse_size_too_small(text):
    with pytest.raises(CaptchaOCRError, match="too small"):
        parse_size(text)


# --- synthetic captchas --------------------------------------------------------------------


def test_synthesize_files_named_by_label(tmp_path):
    samples = synthesize(
        tmp_path / "s", 12, charset="abc12", lengths=(3, 5), size=(120, 40), seed=1
    )
    assert len(samples) == 12
    files = sorted((tmp_path / "s").iterdir())
    assert len(files) == 12
    for sample in samples:
        path = Path(sample.path)
        assert path.is_file()
        assert 3 <= len(sample.label) <= 5
        assert set(sample.label) <= set("abc12")
        assert path.stem.split("_")[0] == sample.label
        with Image.open(path) as image:
            assert image.size == (120, 40)
    found = find_samples(tmp_path / "s")
    assert sorted((s.path, s.label) for s in found) == sorted((s.path, s.label) for s in samples)


def test_synthesize_repeated_labels_get_suffixes(tmp_path):
    samples = synthesize(tmp_path, 4, charset="a", lengths=(1, 1), size=(120, 40), seed=0)
    assert [Path(s.path).name for s in samples] == ["a.png", "a_1.png", "a_2.png", "a_3.png"]
    assert [s.label for s in find_samples(tmp_path)] == ["a"] * 4


def test_synthesize_is_seeded(tmp_path):
    def draw(folder: str, seed: int) -> list[tuple[str, bytes]]:
        samples = synthesize(
            tmp_path / folder, 6, charset="abc12", lengths=(4, 4), size=(120, 40), seed=seed
        )
        return [(Path(s.path).name, Path(s.path).read_bytes()) for s in samples]

    first = draw("one", 5)
    assert draw("two", 5) == first
    other = draw("three", 6)
    assert [name for name, _ in other] != [name for name, _ in first]
    assert [data for _, data in other] != [data for _, data in first]


def test_synthesize_same_labels_different_pictures(tmp_path):
    # With one possible label, only the drawing can differ between seeds.
    a = synthesize(tmp_path / "a", 1, charset="a", lengths=(1, 1), size=(120, 40), seed=1)
    b = synthesize(tmp_path / "b", 1, charset="a", lengths=(1, 1), size=(120, 40), seed=2)
    assert Path(a[0].path).read_bytes() != Path(b[0].path).read_bytes()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"count": 0}, "--count"),
        ({"charset": ""}, "non-empty"),
        ({"charset": "aba"}, "without repeats"),
        ({"charset": "ab_"}, "not safe"),
        ({"charset": "a/b"}, "not safe"),
        ({"fonts": [__file__]}, "not a TrueType"),
        ({"fonts": ["no/such/font.ttf"]}, "not a TrueType"),
    ],
)
def test_synthesize_bad_arguments(tmp_path, kwargs, message):
    arguments = {"count": 2, "charset": "ab", "size": (120, 40)} | kwargs
    with pytest.raises(CaptchaOCRError, match=message):
        synthesize(tmp_path / "out", **arguments)
    assert not list(tmp_path.rglob("*.png"))


def test_synthesize_draws_with_the_given_fonts(tmp_path):
    # DejaVu Sans Mono (shipped with matplotlib) dots its zero; the package's font does not.
    matplotlib = pytest.importorskip("matplotlib")
    dejavu = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSansMono.ttf"
    draw = {"count": 1, "charset": "0", "lengths": (3, 3), "size": (120, 40), "seed": 3}
    packaged = synthesize(tmp_path / "packaged", **draw)
    dotted = synthesize(tmp_path / "dotted", **draw, fonts=[dejavu])
    again = synthesize(tmp_path / "again", **draw, fonts=[dejavu])
    assert Path(dotted[0].path).read_bytes() != Path(packaged[0].path).read_bytes()
    assert Path(dotted[0].path).read_bytes() == Path(again[0].path).read_bytes()


def test_synth_safe_chars():
    assert synth_safe_chars('ab_c.1 2\n/\\:*?"<>|é') == "abc12é"
    assert synth_safe_chars("2345678bcdefgmnpwxy") == "2345678bcdefgmnpwxy"


def border_median(path: str) -> np.ndarray:
    image = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return np.median(border, axis=0)


def test_synthesize_with_colours(tmp_path):
    colours = ((240, 235, 200), (20, 20, 120))
    samples = synthesize(tmp_path / "a", 4, charset="abc", size=(120, 40), seed=3, colours=colours)
    for sample in samples:
        assert np.abs(border_median(sample.path) - colours[0]).max() <= 12
    again = synthesize(tmp_path / "b", 4, charset="abc", size=(120, 40), seed=3, colours=colours)
    assert [Path(s.path).read_bytes() for s in again] == [
        Path(s.path).read_bytes() for s in samples
    ]


@pytest.mark.parametrize(
    ("background", "ink"), [((222, 222, 222), (0, 0, 0)), ((20, 20, 40), (240, 200, 90))]
)
def test_synthesized_text_shows_in_the_ink_colour(tmp_path, background, ink):
    # The captcha package masks glyphs by their brightness: black ink once came out invisible.
    samples = synthesize(
        tmp_path, 6, charset="abc", size=(200, 50), seed=1, colours=(background, ink)
    )
    for sample in samples:
        pixels = np.asarray(Image.open(sample.path).convert("RGB"), np.float64)
        inked = (np.abs(pixels - ink).max(axis=-1) <= 40).mean()
        assert inked > 0.03, f"{sample.path}: only {inked:.1%} of pixels in the ink colour"
    _, ink_found = estimate_colours(samples)
    assert np.abs(np.array(ink_found) - ink).max() <= 40


@pytest.mark.parametrize(
    ("background", "ink"), [((230, 225, 220), (20, 30, 90)), ((15, 10, 40), (240, 240, 180))]
)
def test_estimate_colours(tmp_path, background, ink):
    samples = []
    for i in range(3):
        image = np.empty((50, 200, 3), np.uint8)
        image[:] = background
        image[15:35, 20 + 10 * i : 80 + 10 * i] = ink  # 12 % of the pixels
        path = tmp_path / f"s{i}.png"
        Image.fromarray(image).save(path)
        samples.append(Sample(str(path), "x"))
    (tmp_path / "bad.png").write_text("not an image")
    samples.append(Sample(str(tmp_path / "bad.png"), "x"))
    assert estimate_colours(samples) == (background, ink)
    assert estimate_colours(samples[-1:]) is None
