"""Flags that several commands share, and the helper that registers a command."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.presets import PRESETS

Command = Callable[[argparse.Namespace], int]

# The confidence a read needs to become a pseudo-label (pseudo-label, train --unlabeled): on
# rkn_securimage 0.3 kept more reads, a few more of them wrong, and taught more than the run's
# recommended threshold (bench/RESULTS.md, section pseudo-labels).
PSEUDO_MIN_CONFIDENCE = "0.3"
# train --unlabeled: self-training rounds after the first training; the second round still
# paid on rkn_securimage (section pseudo-labels).
SELF_TRAINING_ROUNDS = 2


def add_command(
    sub: argparse._SubParsersAction, name: str, help_text: str, func: Command
) -> argparse.ArgumentParser:
    """A subcommand whose one-line help is also its description; ``func`` runs it."""
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.set_defaults(func=func)
    return p


def add_input_size_options(p: argparse.ArgumentParser) -> None:
    """--height/--width, read by data.model_input_size (train, inspect, augment-preview)."""
    small = PRESETS["default"].scale_up
    p.add_argument(
        "--height",
        type=int,
        help="model input height (default: the data's most common; "
        f"default preset: under {small.below} px scaled to {small.to})",
    )
    p.add_argument(
        "--width", type=int, help="model input width (default: the data's, scaled with the height)"
    )


def add_size_options(p: argparse.ArgumentParser) -> None:
    """The input size, channels and sample seed of the commands that draw a grid."""
    add_input_size_options(p)
    p.add_argument(
        "--channels", type=int, choices=(1, 3), help="1 = grey, 3 = RGB (default: the preset's)"
    )
    p.add_argument("--seed", type=int, default=0, help="which samples to show")


def add_label_options(p: argparse.ArgumentParser) -> None:
    """How labels are read from file names (every command that reads labeled data)."""
    p.add_argument(
        "--label-pattern",
        metavar="REGEX",
        help="regex with a group (?P<label>...) matched on the file name without suffix "
        "(default: the name, less a _<k> repeat suffix)",
    )
    p.add_argument("--ignore-case", action="store_true", help="fold labels to lower case")


def add_read_options(p: argparse.ArgumentParser) -> None:
    """How a trained model reads images (predict, evaluate)."""
    p.add_argument("--batch-size", type=int, default=64, help="images per model call (default 64)")
    p.add_argument(
        "--beam-width", type=int, default=1, help="1 = greedy decoding; >1 = beam search"
    )
    p.add_argument("--threads", type=int, help="ONNX Runtime threads (default: one per core)")
    p.add_argument("--allowed-chars", help="restrict the output to these characters")


def min_confidence_flag(given: str, flag: str = "--min-confidence") -> float | str:
    """A ``--min-confidence`` flag as given: a number from 0 to 1, or ``recommended``."""
    from captcha_ocr.infer import RECOMMENDED

    if given == RECOMMENDED:
        return given
    try:
        value = float(given)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise CaptchaOCRError(f"{flag} {given!r}: give a number from 0 to 1, or {RECOMMENDED}")
    return value


def image_paths(items: Sequence[str]) -> list[str]:
    """The image files named, folders expanded to the images in them."""
    from captcha_ocr.data import image_files

    paths: list[str] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = [str(p) for p in image_files(path)]
            if not found:
                raise CaptchaOCRError(f"no images found in folder {path}")
            paths.extend(found)
        elif path.is_file():
            paths.append(str(path))
        else:
            raise CaptchaOCRError(f"{path} does not exist")
    return paths
