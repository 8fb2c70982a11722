"""Accuracy with default settings on captcha styles unlike the reference set.

Each style is drawn with the `synth` generator (the `captcha` package), then post-processed
(transparent palette backgrounds, salt-and-pepper dots, coloured noise lines, light text on a
dark background, mixed case, other file naming), trained with `captcha-ocr train` defaults
plus only generic flags (`--ignore-case`, `--label-pattern`), and read back on a test set
drawn with another seed.

    python bench/styles.py                       # every style
    python bench/styles.py --styles digits small --train-count 2000
"""

from __future__ import annotations

import argparse
import collections
import logging
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH_DIR, command_line, machine, table, update_section

from captcha_ocr.config import resolve_train_config
from captcha_ocr.data import find_samples
from captcha_ocr.evaluate import evaluate
from captcha_ocr.export import export_run
from captcha_ocr.infer import Reader
from captcha_ocr.synth import synthesize
from captcha_ocr.train import train


@dataclass(frozen=True)
class Style:
    name: str
    charset: str
    lengths: tuple[int, int]
    size: tuple[int, int]  # (width, height)
    effects: tuple[str, ...] = ()
    naming: str = "label"  # "label" or "id_label"
    flags: dict = field(default_factory=dict)
    font: str = ""  # a font shipped with matplotlib; "": the captcha package's Droid Sans Mono


STYLES = [
    Style("digits", "0123456789", (4, 4), (160, 60)),
    Style("letters", "abcdefghijkmnpqrstuvwxyz", (6, 6), (200, 60)),
    Style(
        "mixed-case",
        "abcdefghjkmnpqrstuvwxyzABCDEFGHJKMNPQRSTUVWXYZ",
        (5, 5),
        (180, 60),
        flags={"ignore_case": True},
    ),
    # Droid Sans Mono draws 0 and O alike but for their width, which the generator's random
    # stretch erases (a coin toss: 81 % with it); DejaVu Sans Mono dots its zero, as fonts
    # made for reading codes do.
    Style("lookalikes", "0O1lI9gcenm", (5, 5), (200, 60), font="DejaVuSansMono.ttf"),
    Style("small", "2345678abcdefghkmnprwxy", (4, 5), (100, 40)),
    Style("long-wide", "23456789abcdefghjkmnpqrstuvwxyz", (6, 8), (250, 80)),
    Style("transparent", "2345678abcdefgmnpwxy", (5, 5), (200, 50), ("transparent",)),
    Style("noisy", "2345678abcdefgmnpwxy", (5, 6), (200, 60), ("salt_pepper", "colour_lines")),
    Style(
        "dark",
        "23456789ABCDEFGHJKLMNPRSTUVWXYZ",
        (5, 5),
        (180, 60),
        ("invert",),
        naming="id_label",
        flags={"label_pattern": r"^\d+_(?P<label>.+)$"},
    ),
]


def apply_effects(path: Path, effects: tuple[str, ...], rng: np.random.Generator) -> None:
    image = Image.open(path).convert("RGB")
    if "colour_lines" in effects:
        draw = ImageDraw.Draw(image)
        width, height = image.size
        for _ in range(3):
            colour = tuple(int(v) for v in rng.integers(0, 200, 3))
            points = [(int(rng.integers(0, width)), int(rng.integers(0, height))) for _ in range(2)]
            draw.line(points, fill=colour, width=int(rng.integers(1, 3)))
    pixels = np.asarray(image).copy()
    if "salt_pepper" in effects:
        mask = rng.random(pixels.shape[:2])
        pixels[mask < 0.02] = 0
        pixels[mask > 0.98] = 255
    if "invert" in effects:
        pixels = 255 - pixels
    image = Image.fromarray(pixels)
    if "transparent" in effects:
        # Palette PNG whose light background is transparent: naive loaders see text on black.
        grey = np.asarray(image.convert("L"))
        palette_image = image.quantize(colors=64)
        index = np.asarray(palette_image)
        background = int(np.bincount(index[grey > 200].ravel(), minlength=64).argmax())
        palette_image.info["transparency"] = background
        palette_image.save(path, transparency=background)
        return
    image.save(path)


def make_set(style: Style, folder: Path, count: int, seed: int) -> Path:
    fonts = []
    if style.font:
        import matplotlib

        fonts.append(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / style.font)
    samples = synthesize(
        folder, count, style.charset, style.lengths, style.size, seed=seed, fonts=fonts
    )
    rng = np.random.default_rng(seed)
    for k, sample in enumerate(samples):
        path = Path(sample.path)
        if style.effects:
            apply_effects(path, style.effects, rng)
        if style.naming == "id_label":
            path.rename(path.with_name(f"{k:05d}_{path.name}"))
    return folder


def run_style(
    style: Style,
    root: Path,
    train_count: int,
    test_count: int,
    preset: str,
    epochs: int | None,
    seed: int = 0,
) -> dict:
    """Draw the style's training and test sets (the same for every ``seed``), train with
    defaults (``seed`` seeds the split, the weights and the augmentation), read the test set."""
    train_dir = root / style.name / "train"
    test_dir = root / style.name / "test"
    if not train_dir.is_dir():
        make_set(style, train_dir, train_count, seed=1)
        make_set(style, test_dir, test_count, seed=2)
    overrides = {"preset": preset, "seed": seed, "epochs": epochs, **style.flags}
    config = resolve_train_config("default", cli_overrides=overrides)
    started = time.perf_counter()
    result = train(train_dir, root / "runs", config, progress=False)
    seconds = time.perf_counter() - started
    export_run(result.run_dir)
    test = find_samples(test_dir, config.label_pattern, config.ignore_case)
    report = evaluate(Reader.load(result.run_dir), test)
    return {
        "seed": seed,
        "style": style.name,
        "size": f"{style.size[0]}x{style.size[1]}",
        "charset": len(style.charset),
        "lengths": f"{style.lengths[0]}-{style.lengths[1]}",
        "effects": ", ".join(style.effects + ((style.font,) if style.font else ())) or "-",
        "flags": ", ".join(f"--{k.replace('_', '-')}" for k in style.flags) or "-",
        "accuracy": report.accuracy,
        "cer": report.cer,
        "epochs": result.state.epochs_done,
        "seconds": seconds,
        "confusions": report.confusions(),
    }


def summarize(runs: list[dict]) -> dict:
    """One table row from a style's runs (one per seed): means, and every seed's accuracy."""
    confused = collections.Counter()
    for run in runs:
        confused.update(run["confusions"])
    mean = {key: float(np.mean([run[key] for run in runs])) for key in ("accuracy", "cer")}
    return {
        **runs[0],
        **mean,
        "per_seed": " / ".join(f"{run['accuracy']:.2%}" for run in runs),
        "epochs": round(float(np.mean([run["epochs"] for run in runs]))),
        "seconds": float(np.mean([run["seconds"] for run in runs])),
        "confused": ", ".join(f"{a}->{b} {n}x" for (a, b), n in confused.most_common(3)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--styles", nargs="*", help="names of styles to run (default: all)")
    parser.add_argument("--train-count", type=int, default=3000)
    parser.add_argument("--test-count", type=int, default=300)
    parser.add_argument("--preset", default="default")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0],
        help="training seeds; several give the mean and every seed's accuracy (default 0)",
    )
    parser.add_argument(
        "--epochs", type=int, help="override the default epoch budget (smoke tests)"
    )
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "RESULTS.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    chosen = [s for s in STYLES if not args.styles or s.name in args.styles]
    if not chosen:
        sys.exit(f"no such style; choose from {', '.join(s.name for s in STYLES)}")
    several = len(args.seeds) > 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for style in chosen:
            runs = []
            for seed in args.seeds:
                run = run_style(
                    style,
                    Path(tmp),
                    args.train_count,
                    args.test_count,
                    args.preset,
                    args.epochs,
                    seed,
                )
                runs.append(run)
                print(
                    f"{style.name} (seed {seed}): accuracy {run['accuracy']:.2%}, "
                    f"CER {run['cer']:.4f} ({run['epochs']} epochs, {run['seconds']:.0f} s)",
                    flush=True,
                )
            rows.append(summarize(runs))
    seeds = ", ".join(map(str, args.seeds))
    text = (
        f"### Accuracy per captcha style, default settings (preset `{args.preset}`"
        + (f", training seeds {seeds}" if several else "")
        + ")\n\n"
        f"{args.train_count} training images per style (10 % of them for validation), "
        f"{args.test_count} test images drawn with another seed"
        + (
            "; the same images for every training seed, which changes the split, the "
            "initial weights and the augmentation.\n\n"
            if several
            else ".\n\n"
        )
        + table(
            [
                "style",
                "size",
                "charset",
                "lengths",
                "effects",
                "flags",
                "test accuracy" + (" (mean)" if several else ""),
                *(["per seed"] if several else []),
                "CER",
                "epochs",
                "train s",
                "most confused (label->read)",
            ],
            [
                [
                    r["style"],
                    r["size"],
                    r["charset"],
                    r["lengths"],
                    r["effects"],
                    r["flags"],
                    f"{r['accuracy']:.2%}",
                    *([r["per_seed"]] if several else []),
                    f"{r['cer']:.4f}",
                    r["epochs"],
                    f"{r['seconds']:.0f}",
                    r["confused"] or "-",
                ]
                for r in rows
            ],
        )
        + f"\n\nCommand: `{command_line()}`  \nMachine: {machine()}\n"
    )
    print(text)
    update_section(f"styles-{args.preset}" + ("-seeds" if several else ""), text, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
