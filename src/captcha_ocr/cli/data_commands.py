"""Commands that make, fetch and look at data: ``synth``, ``download``, ``inspect``,
``augment-preview``. None of them imports Keras or TensorFlow."""

from __future__ import annotations

import argparse
import logging

from captcha_ocr.charset import DEFAULT_CHARSET
from captcha_ocr.cli.options import (
    add_command,
    add_label_options,
    add_size_options,
)
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.presets import PRESETS, get_preset
from captcha_ocr.sizes import ImageSize

log = logging.getLogger("captcha_ocr")


def add_synth(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "synth", "draw labeled captcha PNGs (the built-in default data)", cmd_synth
    )
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder to write <label>.png files into")
    p.add_argument("--count", type=int, default=1000, help="how many images (default 1000)")
    p.add_argument(
        "--charset",
        default=DEFAULT_CHARSET,
        help="characters to draw from (default: the reference set's 19)",
    )
    p.add_argument("--length", default="5", help="label length, or a range like 4-6 (default 5)")
    p.add_argument("--size", default="200x50", help="WIDTHxHEIGHT in pixels (default 200x50)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--font",
        action="append",
        default=[],
        metavar="TTF",
        help="a font file to draw with; repeat for several (default: the captcha package's)",
    )


def cmd_synth(args: argparse.Namespace) -> int:
    from captcha_ocr.synth import parse_length_range, parse_size, synthesize

    samples = synthesize(
        args.out_dir,
        args.count,
        charset=args.charset,
        lengths=parse_length_range(args.length),
        size=parse_size(args.size),
        seed=args.seed,
        progress=True,
        fonts=args.font,
    )
    log.info("wrote %d captchas to %s (label = file name)", len(samples), args.out_dir)
    return 0


def add_download(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "download", "download and unpack a dataset archive (zip or tar)", cmd_download
    )
    p.add_argument("url", metavar="URL", help="http(s):// or file:// URL of the archive")
    p.add_argument("--to", default="Datasets", help="target folder (default Datasets)")
    p.add_argument("--sha256", help="expected SHA-256 of the archive")


def cmd_download(args: argparse.Namespace) -> int:
    from captcha_ocr.download import download

    folder = download(args.url, args.to, args.sha256)
    log.info("dataset ready in %s", folder)
    return 0


def add_inspect(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "inspect",
        "describe a data set: sizes, charset, label lengths, warnings, a sample grid",
        cmd_inspect,
    )
    p.add_argument("data", metavar="DATA", help="folder of labeled images, or a path,label CSV")
    p.add_argument("--grid", default="inspect.png", help="PNG of samples as the model sees them")
    p.add_argument(
        "--preset",
        default="default",
        help=f"the preset to size the model input for: {', '.join(PRESETS)} (default: default)",
    )
    add_size_options(p)
    add_label_options(p)


def cmd_inspect(args: argparse.Namespace) -> int:
    from captcha_ocr.survey import inspect_dataset, sample_grid

    preset = get_preset(args.preset)  # a wrong name fails before the images are read
    report = inspect_dataset(
        args.data, args.label_pattern, args.ignore_case, args.width, args.height, args.preset
    )
    print(report.summary())
    if report.count:
        size = _input_size(report)
        channels = args.channels or preset.channels
        print(f"model input: {size} px, {channels} channel(s) (--width/--height change it)")
        grid = sample_grid(report, args.grid, size, channels, seed=args.seed)
        print(f"sample grid: {grid}")
    return 0


def add_augment_preview(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "augment-preview",
        "draw what training augmentation does to a few samples",
        cmd_augment_preview,
    )
    p.add_argument("data", metavar="DATA", help="folder of labeled images, or a path,label CSV")
    p.add_argument("--out", default="augment.png", help="PNG to write (default augment.png)")
    p.add_argument(
        "--preset",
        help=f"preset whose augmentation recipe to show: {', '.join(PRESETS)} (default: default)",
    )
    p.add_argument("--config", help="YAML training settings (its augment: section is used)")
    p.add_argument("--rows", type=int, default=6, help="samples to show")
    p.add_argument("--variants", type=int, default=4, help="augmented copies per sample")
    add_size_options(p)
    add_label_options(p)


def cmd_augment_preview(args: argparse.Namespace) -> int:
    from captcha_ocr.config import load_yaml, resolve_train_config
    from captcha_ocr.survey import augment_grid, inspect_dataset

    file_overrides = load_yaml(args.config) if args.config else {}
    config = resolve_train_config("default", file_overrides, {"preset": args.preset})
    report = inspect_dataset(
        args.data, args.label_pattern, args.ignore_case, args.width, args.height, config.preset
    )
    if not report.count:
        raise CaptchaOCRError(f"no labeled images in {args.data}")
    channels = args.channels or config.channels or 1  # the preset's choice (reference: RGB)
    path = augment_grid(
        report.samples,
        args.out,
        config.augment,
        _input_size(report),
        channels,
        rows=args.rows,
        variants=args.variants,
        seed=args.seed,
    )
    print(f"augmentation preview: {path}")
    return 0


def _input_size(report) -> ImageSize:
    """The size the model would be built for (``report.input_size``); an error when no
    image could be read to measure it."""
    if report.input_size is None:
        raise CaptchaOCRError(f"none of the images in {report.source} could be read")
    return report.input_size
