"""Look at a data set before training: counts, sizes, charset, warnings, and pictures.

Powers ``captcha-ocr inspect`` and ``captcha-ocr augment-preview``. NumPy and Pillow only.
"""

from __future__ import annotations

import collections
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from captcha_ocr.augment import augment_image
from captcha_ocr.config import AugmentConfig
from captcha_ocr.data import (
    DEFAULT_LABEL_PATTERN,
    Sample,
    collect_samples,
    model_input_size,
    most_common_size,
    shown_name,
)
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.files import atomic_path
from captcha_ocr.images import ImageLoadError, load_image, read_header
from captcha_ocr.sizes import ImageSize

RARE_CHARACTER = 20  # fewer examples than this of a character: the model will confuse it

# File namings that the default label rule reads wrongly, told apart by what they leave in
# the labels: (what a label then looks like, the naming, the --label-pattern that reads it).
NAMING_HINTS = (
    (
        re.compile(r"^captcha[0-9a-f]+_."),
        "captcha<hash>_<label>",
        r"^captcha[0-9a-f]+_(?P<label>.+)$",
    ),
    (re.compile(r"^\d+_."), "<id>_<label>", r"^\d+_(?P<label>.+)$"),
    (re.compile(r"^[^.]+\.\d+$"), "<label>.<k>", r"^(?P<label>[^.]+)\.\d+$"),
)


@dataclass
class DatasetReport:
    """What ``inspect`` found. ``warnings`` are the things worth acting on."""

    source: str
    count: int
    samples: list[Sample]
    unlabeled: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    undecodable: list[str] = field(default_factory=list)  # names that are not UTF-8
    sizes: collections.Counter[ImageSize] = field(default_factory=collections.Counter)
    modes: collections.Counter = field(default_factory=collections.Counter)
    characters: collections.Counter = field(default_factory=collections.Counter)
    lengths: collections.Counter = field(default_factory=collections.Counter)
    # What training would build the model for (None: no image could be read).
    input_size: ImageSize | None = None
    data_size: ImageSize | None = None  # the most common size, which input_size is made from
    warnings: list[str] = field(default_factory=list)

    @property
    def charset(self) -> str:
        return "".join(sorted(self.characters))

    def summary(self) -> str:
        """A human-readable multi-line report."""
        lines = [f"data: {self.source}", f"labeled images: {self.count}"]
        if self.unlabeled:
            lines.append(
                f"unlabeled (name did not match): {len(self.unlabeled)}, e.g. "
                + ", ".join(Path(p).name for p in self.unlabeled[:3])
            )
        if self.undecodable:
            lines.append(
                f"names not UTF-8: {len(self.undecodable)}, e.g. "
                + ", ".join(shown_name(p) for p in self.undecodable[:3])
            )
        if self.unreadable:
            lines.append(
                f"unreadable: {len(self.unreadable)}, e.g. "
                + "; ".join(reason for _, reason in self.unreadable[:3])
            )
        sizes = ", ".join(f"{size} ({n})" for size, n in self.sizes.most_common(5))
        lines.append(f"image sizes (WxH): {sizes}" + (" ..." if len(self.sizes) > 5 else ""))
        lines.append("image modes: " + ", ".join(f"{m} ({n})" for m, n in self.modes.most_common()))
        lines.append(f"charset ({len(self.characters)}): {self.charset!r}")
        lines.append("  " + "  ".join(f"{c}:{n}" for c, n in sorted(self.characters.items())))
        top = max(self.lengths.values(), default=1)
        lines.append("label lengths:")
        for length in sorted(self.lengths):
            n = self.lengths[length]
            lines.append(f"  {length:>3} {'#' * max(1, round(30 * n / top))} {n}")
        for warning in self.warnings:
            lines.append(f"warning: {warning}")
        return "\n".join(lines)


def inspect_dataset(
    source: str | os.PathLike,
    label_pattern: str | None = None,
    ignore_case: bool = False,
    width: int | None = None,
    height: int | None = None,
    preset: str = "default",
) -> DatasetReport:
    """Scan a folder (or labels file) the way training does, and check every image header.
    ``width``, ``height`` and ``preset`` are training's: they set ``report.input_size``.

    >>> print(inspect_dataset("data/captchas").summary())  # doctest: +SKIP
    """
    scan = collect_samples(source, label_pattern, ignore_case)
    report = DatasetReport(
        str(source), len(scan.samples), scan.samples, scan.unlabeled, undecodable=scan.undecodable
    )
    for sample in scan.samples:
        try:
            header = read_header(sample.path, verify=True)
        except ImageLoadError as error:
            # The file's name, not its path: the summary shows reasons on one line.
            reason = Path(sample.path).name + str(error).removeprefix(sample.path)
            report.unreadable.append((sample.path, reason))
        else:
            report.sizes[header.size] += 1
            report.modes[header.mode] += 1
        report.characters.update(sample.label)
        report.lengths[len(sample.label)] += 1
    if report.sizes:
        try:  # training's own measure, so that the two cannot disagree
            report.data_size = most_common_size(report.samples)
        except CaptchaOCRError:  # the first images training looks at are all unreadable
            pass
        else:
            report.input_size = model_input_size(report.data_size, width, height, preset)
    report.warnings = _warnings(
        report, label_pattern, sized_by_flags=(width, height) != (None, None)
    )
    return report


def _warnings(report: DatasetReport, label_pattern: str | None, sized_by_flags: bool) -> list[str]:
    warnings = []
    if report.undecodable:
        warnings.append(
            f"{len(report.undecodable)} image(s) have a file name that is not valid UTF-8 and "
            "will be skipped; rename them (e.g. with convmv) to use them"
        )
    if report.count == 0:
        warnings.append(
            f"the label pattern {label_pattern or DEFAULT_LABEL_PATTERN!r} matched none of "
            f"{len(report.unlabeled)} image(s); set --label-pattern"
        )
        return warnings
    if report.unlabeled:
        warnings.append(
            f"{len(report.unlabeled)} image(s) did not match the label pattern and will be skipped"
        )
    if report.unreadable:
        warnings.append(f"{len(report.unreadable)} image(s) cannot be read and will be skipped")
    if report.count < 500:
        warnings.append(
            f"only {report.count} labeled images: expect low accuracy (try --pretrain synth)"
        )
    rare = sorted((n, c) for c, n in report.characters.items() if n < RARE_CHARACTER)
    if rare:
        warnings.append(
            "too few examples of "
            + ", ".join(f"{c!r} ({n})" for n, c in rare[:10])
            + f": under {RARE_CHARACTER} each, the model will confuse them"
        )
    letters = {c for c in report.characters if c.isalpha()}
    mixed = sorted(c for c in letters if c.islower() and c.upper() in letters)
    if mixed:
        warnings.append(
            f"labels use both cases of {''.join(mixed)!r}: if the images do not show case, use --ignore-case"
        )
    if len(report.lengths) == 1:
        length = next(iter(report.lengths))
        warnings.append(
            f"every label has {length} characters: the model will not learn to read other lengths"
        )
    if label_pattern is None:
        for shape, naming, pattern in NAMING_HINTS:
            matching = [s.label for s in report.samples if shape.match(s.label)]
            if len(matching) * 2 > report.count:
                warnings.append(
                    f"{len(matching)} label(s) look like {naming} file names (e.g. "
                    f"{matching[0]!r}); if so, read them with --label-pattern '{pattern}'"
                )
                break
    spaces = [s.label for s in report.samples if any(c.isspace() for c in s.label)]
    if spaces:
        warnings.append(f"{len(spaces)} label(s) contain white space, e.g. {spaces[0]!r}")
    if len(report.sizes) > 1 and report.input_size is not None:
        if sized_by_flags:
            made = "set by --width/--height"
        else:
            size, n = report.data_size, report.sizes[report.data_size]
            made = f"made from the most common size, {size} ({n} of {report.count}); "
            made += "set --width/--height to choose"
        warnings.append(
            f"{len(report.sizes)} different image sizes; all are resized to "
            f"{report.input_size}, the model input {made}"
        )
    return warnings


# The grid layout (draw_grid): a margin around the tiles, a band for the title on top, and
# caption lines of Pillow's default font under each tile.
GRID_MARGIN, GRID_TITLE_H, CAPTION_LINE_H = 8, 28, 14


def caption_font(size: int) -> ImageFont.ImageFont:
    """Pillow's default font at ``size`` px, for captions on the PNG grids (here and in
    ``suspects``)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size default font
        return ImageFont.load_default()


def draw_grid(
    tiles: Sequence[tuple[Image.Image, Sequence[tuple[str, str]]]],
    columns: int,
    path: str | os.PathLike,
    title: str = "",
    tile_size: tuple[int, int] | None = None,
) -> Path:
    """Lay out tiles (an image and its caption lines, each ``(text, colour)``) ``columns`` a
    row under ``title`` and write the PNG atomically. Every cell is ``tile_size`` (default:
    the first image's size) over as many caption lines as the most any tile has; an image
    smaller than its cell sits in its top left corner. The one grid of ``inspect``,
    ``augment-preview`` and the suspect labels."""
    if not tiles:
        raise CaptchaOCRError("nothing to draw")
    if columns < 1:
        raise CaptchaOCRError(f"columns must be >= 1 (got {columns})")
    columns = min(columns, len(tiles))
    tile_w, tile_h = tile_size or tiles[0][0].size
    caption_h = 4 + CAPTION_LINE_H * max(len(caption) for _, caption in tiles)
    rows = -(-len(tiles) // columns)
    top = GRID_TITLE_H if title else GRID_MARGIN
    cell_w, cell_h = tile_w + GRID_MARGIN, tile_h + caption_h + GRID_MARGIN
    canvas = Image.new("RGB", (GRID_MARGIN + columns * cell_w, top + rows * cell_h), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((GRID_MARGIN, 6), title, fill="black", font=caption_font(14))
    font = caption_font(13)
    for index, (image, caption) in enumerate(tiles):
        row, column = divmod(index, columns)
        x, y = GRID_MARGIN + column * cell_w, top + row * cell_h
        canvas.paste(image.convert("RGB"), (x, y))
        for line, (text, colour) in enumerate(caption):
            draw.text((x, y + tile_h + 2 + CAPTION_LINE_H * line), text, fill=colour, font=font)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return Path(path)


def _model_view_grid(
    tiles: list[tuple[np.ndarray, str]], columns: int, path: Path, title: str
) -> Path:
    """Grid of arrays as the model sees them ((H, W, C) uint8, one caption line each), drawn
    larger when small: captchas under 160 px wide are hard to see at 1:1."""
    if not tiles:
        raise CaptchaOCRError("nothing to draw")
    height, width = tiles[0][0].shape[:2]
    scale = max(1, round(160 / width))
    images = [
        (
            Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels).resize(
                (width * scale, height * scale), Image.Resampling.NEAREST
            ),
            [(caption, "black")],
        )
        for pixels, caption in tiles
    ]
    return draw_grid(images, columns, path, title)


def sample_grid(
    report: DatasetReport,
    path: str | os.PathLike,
    size: ImageSize,
    channels: int,
    count: int = 24,
    seed: int = 0,
) -> Path:
    """A PNG of ``count`` random samples as the model sees them (resized, grey or RGB)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(report.samples))[: max(count * 2, count)]
    tiles = []
    for index in order:
        sample = report.samples[index]
        try:
            tiles.append((load_image(sample.path, size.height, size.width, channels), sample.label))
        except ImageLoadError:
            continue
        if len(tiles) == count:
            break
    title = f"{report.source}: {len(tiles)} samples as the model sees them ({size}, {channels} ch)"
    return _model_view_grid(tiles, 4, Path(path), title)


def augment_grid(
    samples: list[Sample],
    path: str | os.PathLike,
    config: AugmentConfig,
    size: ImageSize,
    channels: int,
    rows: int = 6,
    variants: int = 4,
    seed: int = 0,
) -> Path:
    """Each row: one sample as the model sees it, then ``variants`` augmented copies."""
    if rows < 1 or variants < 0:
        raise CaptchaOCRError(
            f"--rows must be >= 1 (got {rows}) and --variants >= 0 (got {variants})"
        )
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(samples))[:rows]
    tiles = []
    for index in chosen:
        sample = samples[index]
        original = load_image(sample.path, size.height, size.width, channels)
        tiles.append((original, f"{sample.label} (original)"))
        tiles.extend((augment_image(original, config, rng), "augmented") for _ in range(variants))
    return _model_view_grid(
        tiles,
        variants + 1,
        Path(path),
        "training augmentation (validation data is never augmented)",
    )
