"""Labeled samples: scan a folder or read a CSV, split them, load their pixels, check labels.

No TensorFlow here: the training input pipeline that wraps these arrays lives in ``fit``;
synthetic captchas are drawn by ``synth``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import csv
import io
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from captcha_ocr.charset import Charset, ctc_steps_needed
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.files import write_text_atomic
from captcha_ocr.images import (
    IMAGE_SUFFIXES,
    ImageLoadError,
    image_size,
    is_image_path,
    load_image,
)
from captcha_ocr.presets import get_preset
from captcha_ocr.progress import progress_bar
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


def _labels_rows(path: Path) -> tuple[list[str] | None, list[tuple[int, list[str]]]]:
    """A labels file's header (lower case, when its first row names path and label) and its
    other non-empty rows with their line numbers: CSV, or TSV when tab-separated."""
    if not path.is_file():
        raise CaptchaOCRError(f"labels file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise CaptchaOCRError(
            f"{path} is not UTF-8 text; save the labels file as UTF-8 (rows of path,label)"
        ) from None
    delimiter = "\t" if "\t" in text.split("\n", 1)[0] else ","
    header, rows = None, []
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        for line_number, row in enumerate(reader, 1):
            if not row or not "".join(row).strip():
                continue
            names = [c.strip().lower() for c in row]
            if line_number == 1 and names[:2] == ["path", "label"]:
                header = names
                continue
            if len(row) < 2:
                raise CaptchaOCRError(
                    f"{path}:{line_number}: expected 'path{delimiter}label', got {row!r}"
                )
            rows.append((line_number, row))
    except csv.Error as error:
        raise CaptchaOCRError(
            f"{path}:{reader.line_num}: not a CSV row ({error}); expected 'path{delimiter}label'"
        ) from None
    return header, rows


def _row_path(labels_file: Path, row: list[str]) -> Path:
    """A row's image: a relative path is relative to the labels file's folder."""
    image_path = Path(row[0].strip())
    return image_path if image_path.is_absolute() else labels_file.parent / image_path


def read_labels_file(path: str | Path, ignore_case: bool = False) -> list[Sample]:
    """Read ``path,label`` rows (CSV, or TSV when tab-separated); relative paths are
    relative to the file's folder. A header row ``path,label`` is skipped."""
    path = Path(path)
    samples = []
    for _, row in _labels_rows(path)[1]:
        label = row[1].strip()
        samples.append(Sample(str(_row_path(path, row)), label.lower() if ignore_case else label))
    return samples


# Optional columns of a labels file with a header row (captcha-ocr pseudo-label writes
# them; train reads them): where a label came from, and the part it belongs to.
SOURCE_COLUMN, PSEUDO_SOURCE = "source", "pseudo"  # a model's read, not a person's label
PART_COLUMN, VAL_PART, TRAIN_PART = "part", "val", "train"


def labels_file_column(path: str | Path, column: str) -> dict[str, str]:
    """The non-empty values of ``column`` in a labels file whose header row names it, by the
    real path of each row's image (read as :func:`read_labels_file` reads the rows): empty
    when the file has no such column."""
    path = Path(path)
    header, rows = _labels_rows(path)
    if header is None or column not in header:
        return {}
    index = header.index(column)
    return {
        os.path.realpath(_row_path(path, row)): row[index].strip()
        for _, row in rows
        if index < len(row) and row[index].strip()
    }


def split_as_marked(
    samples: Sequence[Sample], source: str | Path
) -> tuple[list[Sample], list[Sample]] | None:
    """The split a labels file marks in its ``part`` column (``val`` rows validate, the
    rest train), or None when it marks no validation row: a later self-training round
    validates on the very images the first round did, which were never pseudo-labeled."""
    source = Path(source)
    if not (source.is_file() and source.suffix.lower() in CSV_SUFFIXES):
        return None
    parts = labels_file_column(source, PART_COLUMN)
    unknown = sorted({part for part in parts.values() if part not in (TRAIN_PART, VAL_PART)})
    if unknown:
        raise CaptchaOCRError(
            f"{source}: the {PART_COLUMN} column holds {', '.join(map(repr, unknown))}; "
            f"give {TRAIN_PART} or {VAL_PART} (or leave it empty: {TRAIN_PART})"
        )
    val_paths = {path for path, part in parts.items() if part == VAL_PART}
    if not val_paths:
        return None
    val = [s for s in samples if os.path.realpath(s.path) in val_paths]
    train = [s for s in samples if os.path.realpath(s.path) not in val_paths]
    if not train:
        raise CaptchaOCRError(f"{source} marks every row part={VAL_PART}: nothing left to train on")
    return train, val


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

    def read(sample: Sample) -> np.ndarray | str:
        try:
            return load_image(sample.path, height, width, channels)
        except ImageLoadError as error:
            return str(error)

    workers = workers or min(8, (os.cpu_count() or 2) * 2)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        results = list(
            progress_bar(
                pool.map(read, samples),
                total=len(samples),
                desc="loading images",
                unit="img",
                enabled=progress,
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


def check_labels_readable(
    charset: Charset,
    samples: Sequence[Sample],
    time_steps: int | None = None,
    *,
    model: str = "the model",
    hint: str = "check the labels (or --label-pattern), or train a model for longer labels",
) -> None:
    """Refuse labels a model can never output: a character outside its ``charset``, or more
    CTC steps than its ``time_steps`` (None: not checked). Training checks its data with it
    before it starts (``model`` names the network, ``hint`` says what to change), evaluation
    its labeled set (scores against such labels would mean nothing)."""
    bad = [(s, charset.unknown(s.label)) for s in samples if charset.unknown(s.label)]
    if bad:
        chars = "".join(sorted(set("".join(u for _, u in bad))))
        raise CaptchaOCRError(
            f"{len(bad)} label(s) have characters the model cannot output ({chars!r}), e.g. "
            f"{bad[0][0].label!r} ({bad[0][0].path}); the model's charset is {charset.chars!r}"
            " (use --ignore-case if only the case differs)"
        )
    too_long = [s for s in samples if time_steps and ctc_steps_needed(s.label) > time_steps]
    if too_long:
        worst = max(too_long, key=lambda s: ctc_steps_needed(s.label))
        raise CaptchaOCRError(
            f"{len(too_long)} label(s) are longer than the model can output, e.g. "
            f"{worst.label!r} ({worst.path}) needs {ctc_steps_needed(worst.label)} CTC steps, "
            f"but {model} gives {time_steps}; {hint}"
        )
