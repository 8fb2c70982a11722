"""Labeled samples: scan a folder or read a CSV, split them, load their pixels, synthesize more.

No TensorFlow here: the training input pipeline that wraps these arrays lives in ``train``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import csv
import io
import logging
import os
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFont

from captcha_ocr.charset import DEFAULT_CHARSET
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.files import atomic_path, write_text_atomic
from captcha_ocr.images import (
    IMAGE_SUFFIXES,
    ImageLoadError,
    border_colour,
    image_size,
    is_image_path,
    load_image,
)
from captcha_ocr.presets import get_preset
from captcha_ocr.sizes import ImageSize

log = logging.getLogger(__name__)

# The default label rule: the file stem, without a "_<k>" suffix that numbers repeats
# ("2b827.png" and "2b827_3.png" are both "2b827").
DEFAULT_LABEL_PATTERN = r"^(?P<label>.+?)(?:_\d+)?$"
CSV_SUFFIXES = (".csv", ".tsv", ".txt")


@dataclass(frozen=True)
class Sample:
    """One labeled image. ``label`` is always a string (leading zeros kept)."""

    path: str
    label: str


@dataclass(frozen=True)
class ScanResult:
    """Samples found, the image files whose name the label rule did not match, and those
    whose name is not valid UTF-8 (no label can be read from it, nor written to a CSV)."""

    samples: list[Sample]
    unlabeled: list[str]
    undecodable: list[str] = field(default_factory=list)


def compile_label_pattern(pattern: str | None) -> re.Pattern[str]:
    """Compile a label regex; it must have a named group ``label``.

    >>> compile_label_pattern(r"^\\d+_(?P<label>\\w+)$").fullmatch("17_ab3")["label"]
    'ab3'
    """
    try:
        compiled = re.compile(pattern or DEFAULT_LABEL_PATTERN)
    except re.error as error:
        raise CaptchaOCRError(
            f"--label-pattern {pattern!r} is not a valid regex: {error}"
        ) from None
    if "label" not in compiled.groupindex:
        raise CaptchaOCRError(
            f"--label-pattern {pattern!r} needs a named group 'label', e.g. '^(?P<label>.+)_\\d+$'"
        )
    return compiled


def label_from_name(
    path: str | Path, pattern: re.Pattern[str], ignore_case: bool = False
) -> str | None:
    """The label of an image file from its name, or None when the pattern does not match.

    The pattern is matched against the file name with its last suffix removed, so
    ``<label>.<k>.png`` can be read with ``^(?P<label>.+)\\.\\d+$``.

    >>> label_from_name("x/0042_7.png", compile_label_pattern(None))
    '0042'
    """
    stem = Path(path).name.rsplit(".", 1)[0]
    match = pattern.fullmatch(stem)
    if match is None or not match["label"]:
        return None
    label = match["label"]
    return label.lower() if ignore_case else label


def image_files(root: str | Path) -> list[Path]:
    """Image files under ``root``, recursively, sorted (by suffix; contents are not read)."""
    return sorted(p for p in Path(root).rglob("*") if p.is_file() and is_image_path(p))


def scan_folder(
    root: str | Path, label_pattern: str | None = None, ignore_case: bool = False
) -> ScanResult:
    """Find image files under ``root`` (recursively, sorted) and label them by name."""
    root = Path(root)
    if not root.exists():
        raise CaptchaOCRError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise CaptchaOCRError(f"{root} is not a folder (nor a .csv/.tsv labels file)")
    pattern = compile_label_pattern(label_pattern)
    samples, unlabeled, undecodable = [], [], []
    for path in image_files(root):
        if not is_utf8(str(path)):
            undecodable.append(str(path))
            continue
        label = label_from_name(path, pattern, ignore_case)
        if label is None:
            unlabeled.append(str(path))
        else:
            samples.append(Sample(str(path), label))
    return ScanResult(samples, unlabeled, undecodable)


def is_utf8(name: str) -> bool:
    """False for a file name with bytes that are not UTF-8 (Python holds them as surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown_name(path: str) -> str:
    """A file's name fit to print, its non-UTF-8 bytes as escapes."""
    return ascii(os.fsencode(Path(path).name))[2:-1] if not is_utf8(path) else Path(path).name


def read_labels_file(path: str | Path, ignore_case: bool = False) -> list[Sample]:
    """Read ``path,label`` rows (CSV, or TSV when tab-separated); relative paths are
    relative to the file's folder. A header row ``path,label`` is skipped."""
    path = Path(path)
    if not path.is_file():
        raise CaptchaOCRError(f"labels file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise CaptchaOCRError(
            f"{path} is not UTF-8 text; save the labels file as UTF-8 (rows of path,label)"
        ) from None
    delimiter = "\t" if "\t" in text.split("\n", 1)[0] else ","
    samples = []
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        for line_number, row in enumerate(reader, 1):
            if not row or not "".join(row).strip():
                continue
            if line_number == 1 and [c.strip().lower() for c in row[:2]] == ["path", "label"]:
                continue
            if len(row) < 2:
                raise CaptchaOCRError(
                    f"{path}:{line_number}: expected 'path{delimiter}label', got {row!r}"
                )
            image_path = Path(row[0].strip())
            if not image_path.is_absolute():
                image_path = path.parent / image_path
            label = row[1].strip()
            samples.append(Sample(str(image_path), label.lower() if ignore_case else label))
    except csv.Error as error:
        raise CaptchaOCRError(
            f"{path}:{reader.line_num}: not a CSV row ({error}); expected 'path{delimiter}label'"
        ) from None
    return samples


def collect_samples(
    source: str | Path, label_pattern: str | None = None, ignore_case: bool = False
) -> ScanResult:
    """Samples from a folder (labeled by file name) or a labels file, and the images that
    could not be labeled. An error when there is nothing to label: no such folder, a folder
    without images (or only with names that are not UTF-8), a labels file without rows."""
    source = Path(source)
    if source.is_file() and source.suffix.lower() in CSV_SUFFIXES:
        samples = read_labels_file(source, ignore_case)
        if not samples:
            raise CaptchaOCRError(f"labels file {source} has no rows")
        return ScanResult(samples, [])
    scan = scan_folder(source, label_pattern, ignore_case)
    if not scan.samples and not scan.unlabeled:
        if scan.undecodable:
            raise CaptchaOCRError(
                f"the file names in {source} are not valid UTF-8 (e.g. "
                f"{shown_name(scan.undecodable[0])}): rename them, e.g. with convmv"
            )
        raise CaptchaOCRError(
            f"no images found in {source} (looked for {', '.join(IMAGE_SUFFIXES)})"
        )
    return scan


def find_samples(
    source: str | Path, label_pattern: str | None = None, ignore_case: bool = False
) -> list[Sample]:
    """Samples from a folder or a labels file (:func:`collect_samples`); the images left
    out are logged, and finding no sample at all is an error.

    >>> find_samples("data/captchas")  # doctest: +SKIP
    [Sample(path='data/captchas/226md.png', label='226md'), ...]
    """
    scan = collect_samples(source, label_pattern, ignore_case)
    if scan.undecodable:
        log.warning(
            "%d image(s) have a file name that is not valid UTF-8 and were skipped, e.g. %s; "
            "rename them to read them",
            len(scan.undecodable),
            ", ".join(shown_name(p) for p in scan.undecodable[:3]),
        )
    if scan.unlabeled:
        log.warning(
            "%d image(s) did not match the label pattern and were skipped, e.g. %s",
            len(scan.unlabeled),
            ", ".join(Path(p).name for p in scan.unlabeled[:3]),
        )
    if not scan.samples:
        raise CaptchaOCRError(
            f"no image in {source} matched the label pattern "
            f"{label_pattern or DEFAULT_LABEL_PATTERN!r}; set --label-pattern"
        )
    return scan.samples


def split_samples(
    samples: Sequence[Sample], val_fraction: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """A seeded shuffle, then the first ``val_fraction`` is validation (at least one sample).

    >>> train, val = split_samples([Sample(str(i), "a") for i in range(10)], 0.2, seed=0)
    >>> len(train), len(val)
    (8, 2)
    """
    if len(samples) < 2:
        raise CaptchaOCRError(f"need at least 2 labeled images to split; found {len(samples)}")
    order = np.random.default_rng(seed).permutation(len(samples))
    n_val = min(len(samples) - 1, max(1, round(len(samples) * val_fraction)))
    val = [samples[i] for i in sorted(order[:n_val])]
    train = [samples[i] for i in sorted(order[n_val:])]
    return train, val


def write_samples_csv(path: str | Path, samples: Sequence[Sample]) -> None:
    """Save samples as ``path,label`` CSV (atomically), with absolute paths so the file
    reads the same from any working folder."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label"])
    for sample in samples:
        writer.writerow([str(Path(sample.path).resolve()), sample.label])
    write_text_atomic(path, buffer.getvalue())


def most_common_size(samples: Sequence[Sample], limit: int = 500) -> ImageSize:
    """The size seen most often among the first ``limit`` readable images."""
    sizes = collections.Counter(
        size for size in (image_size(s.path) for s in samples[:limit]) if size is not None
    )
    if not sizes:
        raise CaptchaOCRError(
            f"none of the images could be read (e.g. {samples[0].path}); "
            "check that the files are images (PNG, JPEG, ...) and not damaged"
        )
    return sizes.most_common(1)[0][0]


def model_input_size(
    data_size: ImageSize, width: int | None, height: int | None, preset: str
) -> ImageSize:
    """The size a model is built for: ``--width``/``--height`` when both are given; with
    neither, what ``preset`` makes of the data's most common ``data_size`` (the default
    preset scales small images up: ``presets.SMALL_IMAGES``); with one, the other side is the
    data's own.

    >>> model_input_size(ImageSize(100, 40), None, None, "default")
    ImageSize(width=160, height=64)
    >>> model_input_size(ImageSize(100, 40), None, 32, "default")
    ImageSize(width=100, height=32)
    >>> model_input_size(ImageSize(100, 40), None, None, "tiny")
    ImageSize(width=100, height=40)
    """
    if width is None and height is None:
        return get_preset(preset).input_size(data_size)
    return ImageSize(width or data_size.width, height or data_size.height)


@dataclass(frozen=True)
class LoadedImages:
    """Pixels of the samples that could be read, in order, and the ones that could not."""

    images: np.ndarray  # (N, H, W, C) uint8
    samples: list[Sample]
    failed: list[tuple[str, str]]  # (path, reason)


def load_samples(
    samples: Sequence[Sample],
    height: int,
    width: int,
    channels: int,
    strict: bool = False,
    workers: int | None = None,
    progress: bool = False,
) -> LoadedImages:
    """Decode every sample's image in parallel; report (or, with ``strict``, raise on) failures."""
    from tqdm import tqdm

    def read(sample: Sample) -> np.ndarray | str:
        try:
            return load_image(sample.path, height, width, channels)
        except ImageLoadError as error:
            return str(error)

    workers = workers or min(8, (os.cpu_count() or 2) * 2)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        results = list(
            tqdm(
                pool.map(read, samples),
                total=len(samples),
                desc="loading images",
                unit="img",
                disable=not progress,
                leave=False,
            )
        )
    kept = [(s, r) for s, r in zip(samples, results) if isinstance(r, np.ndarray)]
    failed = [(s.path, r) for s, r in zip(samples, results) if isinstance(r, str)]
    if failed:
        message = f"{len(failed)} of {len(samples)} image(s) could not be read, e.g. " + "; ".join(
            reason for _, reason in failed[:3]
        )
        if strict:
            raise CaptchaOCRError(message + " (remove them, or drop --strict to skip them)")
        log.warning("%s; skipped", message)
    if not kept:
        example = f", e.g. {failed[0][1]}" if failed else ""
        raise CaptchaOCRError(
            f"none of the {len(samples)} image(s) could be read{example}; "
            "check that the files are images (PNG, JPEG, ...) and not damaged"
        )
    images = np.stack([r for _, r in kept]).astype(np.uint8)
    return LoadedImages(images, [s for s, _ in kept], failed)


# --- synthetic captchas --------------------------------------------------------------------


def parse_length_range(text: str) -> tuple[int, int]:
    """``"5"`` -> (5, 5); ``"4-6"`` -> (4, 6)."""
    try:
        low, _, high = text.partition("-")
        lengths = int(low), int(high or low)
    except ValueError:
        raise CaptchaOCRError(f"--length must look like 5 or 4-6, got {text!r}") from None
    if not 1 <= lengths[0] <= lengths[1]:
        raise CaptchaOCRError(f"--length {text!r}: need 1 <= min <= max")
    return lengths


def parse_size(text: str) -> tuple[int, int]:
    """``"200x50"`` -> (200, 50) as (width, height)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise CaptchaOCRError(f"size must look like WIDTHxHEIGHT (e.g. 200x50), got {text!r}")
    width, height = int(match[1]), int(match[2])
    if width < 16 or height < 16:
        raise CaptchaOCRError(f"size {text!r} is too small; use at least 16x16")
    return width, height


class _SeededSecrets:
    """Stands in for the ``secrets`` module inside ``captcha.image``, which draws from the
    OS entropy pool and so cannot be seeded; with this, ``synth --seed`` is reproducible."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def randbelow(self, n: int) -> int:
        return self._rng.randrange(n)

    def randbits(self, k: int) -> int:
        return self._rng.getrandbits(k)

    def choice(self, seq):
        return self._rng.choice(seq)


@contextlib.contextmanager
def _seeded_captcha(seed: int) -> Iterator[None]:
    try:
        import captcha.image as captcha_image
    except ImportError:
        raise CaptchaOCRError(
            "synth needs the 'captcha' package: pip install 'captcha-ocr[train]'"
        ) from None
    original = captcha_image.secrets
    captcha_image.secrets = _SeededSecrets(random.Random(seed))
    try:
        yield
    finally:
        captcha_image.secrets = original


UNSAFE_IN_FILE_NAMES = set('/\\:*?"<>|._ ')


def synth_safe_chars(charset: str) -> str:
    """The characters of ``charset`` that can appear in a synthetic captcha's file name."""
    return "".join(c for c in charset if c not in UNSAFE_IN_FILE_NAMES and c.isprintable())


Colour = tuple[int, int, int]


def estimate_colours(samples: Sequence[Sample]) -> tuple[Colour, Colour] | None:
    """(background, text) colours typical of ``samples``: the median border colour, and the
    median of each image's darkest (or, on dark backgrounds, lightest) 5 % of pixels."""
    backgrounds, inks = [], []
    for sample in samples:
        try:
            image = load_image(sample.path, 50, 200, 3).reshape(-1, 3).astype(np.float32)
        except ImageLoadError:
            continue
        background = border_colour(image.reshape(50, 200, 3))
        brightness = image.mean(axis=1)
        dark_text = brightness.mean() > 127
        cut = np.percentile(brightness, 5 if dark_text else 95)
        ink = image[brightness <= cut] if dark_text else image[brightness >= cut]
        backgrounds.append(background)
        inks.append(np.median(ink, axis=0))
    if not backgrounds:
        return None
    bg = tuple(int(v) for v in np.median(backgrounds, axis=0))
    fg = tuple(int(v) for v in np.median(inks, axis=0))
    return bg, fg  # type: ignore[return-value]


def synthesize(
    out_dir: str | Path,
    count: int,
    charset: str = DEFAULT_CHARSET,
    lengths: tuple[int, int] = (5, 5),
    size: tuple[int, int] = (200, 50),
    seed: int = 0,
    progress: bool = False,
    colours: tuple[Colour, Colour] | None = None,
    fonts: Sequence[str | Path] = (),
) -> list[Sample]:
    """Draw ``count`` labeled captchas with the ``captcha`` package into ``out_dir``.

    Files are named ``<label>.png``, or ``<label>_<k>.png`` when a label repeats, which the
    default label rule reads back. ``colours`` = (background, text) imitates a data set's
    colours (each image varies them a little); None: the package's random colours.
    ``fonts``: TrueType files to draw with (each glyph picks one at random); empty: the
    package's Droid Sans Mono, whose 0 and O differ only in width.

    >>> synthesize("data/synth", 100, seed=1)  # doctest: +SKIP
    """
    from tqdm import tqdm

    if count < 1:
        raise CaptchaOCRError("--count must be >= 1")
    if not charset or len(set(charset)) != len(charset):
        raise CaptchaOCRError(f"--charset {charset!r} must be non-empty without repeats")
    bad = sorted(set(charset) & UNSAFE_IN_FILE_NAMES)
    if bad:
        raise CaptchaOCRError(
            f"--charset cannot hold {''.join(bad)!r}: they are not safe in file names"
        )
    for font in fonts:
        try:
            ImageFont.truetype(str(font), 10)
        except OSError as error:
            raise CaptchaOCRError(
                f"--font {font}: not a TrueType/OpenType font file ({error})"
            ) from None
    width, height = size
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    seen: collections.Counter[str] = collections.Counter()
    samples = []
    with _seeded_captcha(seed):
        from captcha.image import ImageCaptcha

        # Font sizes follow the image height (the package's defaults suit 60 px).
        font_sizes = tuple(max(10, int(height * f)) for f in (0.7, 0.8, 0.9))
        generator = ImageCaptcha(
            width=width,
            height=height,
            fonts=[str(font) for font in fonts] or None,
            font_sizes=font_sizes,
        )
        for _ in tqdm(range(count), desc="drawing captchas", unit="img", disable=not progress):
            label = "".join(rng.choice(charset) for _ in range(rng.randint(*lengths)))
            seen[label] += 1
            name = label if seen[label] == 1 else f"{label}_{seen[label] - 1}"
            path = out_dir / f"{name}.png"
            if colours is None:
                image = generator.generate_image(label)
            else:
                background, ink = (
                    np.array([np.clip(v + rng.randint(-12, 12), 0, 255) for v in colour])
                    for colour in colours
                )
                # The package pastes each glyph through a mask made from its brightness, so
                # dark ink (black text, as in most real sets) comes out invisible. Draw white
                # on black instead and use that as the ink coverage of each pixel.
                coverage = generator.generate_image(
                    label, bg_color=(0, 0, 0), fg_color=(255, 255, 255, 255)
                )
                alpha = np.asarray(coverage.convert("L"), np.float32)[..., None] / 255.0
                pixels = background * (1.0 - alpha) + ink * alpha
                image = Image.fromarray(pixels.round().astype(np.uint8), "RGB")
            with atomic_path(path) as tmp:
                image.save(tmp, format="PNG")
            samples.append(Sample(str(path), label))
    return samples
