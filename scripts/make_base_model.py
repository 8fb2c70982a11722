"""Train the base model shipped in the package (``train --init base``, ``predict base``).

It learns on synthetic captchas only, of a wide range of styles, so that it starts any
training ahead and reads some styles zero-shot; no real captcha, so no test part of any
data set, is ever seen. Three drawings (40 / 35 / 25 %, ``DRAWING_SHARES``):

* the ``captcha`` package's warped glyphs, noise curve and dots (as ``captcha-ocr synth``);
* plain text in a random font, each glyph turned and shifted, under 0-12 crossing lines
  (1-5 px) and dots, on flat, noisy or gradient backgrounds;
* grey bold text, letters touching, under 3-11 wavy lines (most 2-4 px, in or near the
  text's own grey) and small crosses: the look of PHP Securimage, a common hard style;

then any of: blur, JPEG artefacts, a 1-bit threshold, light text on dark. Sizes run from
70x25 to 240x80, labels from 3 to 8 characters of digits and ASCII letters of both cases.
Fonts: the DejaVu and STIX families that matplotlib ships, and the package's Droid Sans Mono.

    python scripts/make_base_model.py --images 40000 --epochs 10      # ~1.5 hours on 2 cores
    python scripts/make_base_model.py --images 300 --epochs 1 --out /tmp/base --no-install

The shipped model was made before the third drawing was added (at commit 2992885: the first
two drawings, half each): ``--data D --epochs 5 --no-install`` (55 min), then ``--data D
--init RUN --epochs 5`` (a second cosine schedule from the first run's weights, 32 min;
resumed once with ``captcha-ocr train --resume``), installed with ``--install RUN``:
synthetic validation CER 0.231, 41.4 % exact (0.268 and 35.8 % after the first 5 epochs).
Five more epochs from it with all three drawings (``--data D2 --init base --epochs 5
--no-install``, 21 min) make a candidate that reads more zero-shot but fine-tunes no better
(``bench/RESULTS.md``, "base-securimage"); it is not shipped.

The result (the run folder's ``configs.yaml``, ``model.keras`` and ``model.onnx``) is copied
into ``src/captcha_ocr/base_model/`` unless ``--no-install``.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import multiprocessing
import shutil
import string
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from captcha_ocr.synth import seeded_captcha

BASE_CHARSET = string.digits + string.ascii_lowercase + string.ascii_uppercase
INPUT_SIZE = (192, 64)  # width, height: 3:1, the middle of the sizes drawn
PACKAGE_DIR = Path(__file__).resolve().parents[1] / "src" / "captcha_ocr" / "base_model"


def font_files() -> list[str]:
    import captcha
    import matplotlib

    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    names = [p for p in sorted(ttf.glob("*.ttf")) if p.name.startswith(("DejaVu", "STIXGeneral"))]
    names.append(Path(captcha.__file__).parent / "data" / "DroidSansMono.ttf")
    return [str(p) for p in names if "Display" not in p.name]


def random_label(rng: np.random.Generator) -> str:
    length = int(rng.choice([3, 4, 4, 5, 5, 5, 6, 6, 6, 7, 8]))
    pool = rng.choice(["digits", "lower", "upper", "mixed", "mixed", "mixed"])
    chars = {
        "digits": string.digits,
        "lower": string.digits + string.ascii_lowercase,
        "upper": string.digits + string.ascii_uppercase,
        "mixed": BASE_CHARSET,
    }[pool]
    return "".join(rng.choice(list(chars), length))


def random_size(rng: np.random.Generator, length: int) -> tuple[int, int]:
    height = int(rng.integers(25, 81))
    aspect = rng.uniform(2.2, 4.2) * max(1.0, length / 6)
    return min(260, max(70, int(height * aspect))), height


def random_colours(rng: np.random.Generator) -> tuple[tuple, tuple]:
    if rng.random() < 0.5:  # grey-ish: dark text on light
        bg = int(rng.integers(180, 256))
        return (bg, bg, bg), tuple([int(rng.integers(0, 120))] * 3)
    bg = tuple(int(v) for v in rng.integers(150, 256, 3))
    return bg, tuple(int(v) for v in rng.integers(0, 130, 3))


def draw_package_style(label: str, size, fonts, rng) -> Image.Image:
    from captcha.image import ImageCaptcha

    width, height = size
    chosen = [fonts[i] for i in rng.choice(len(fonts), 3, replace=False)]
    sizes = tuple(max(10, int(height * f)) for f in (0.7, 0.8, 0.9))
    generator = ImageCaptcha(width=width, height=height, fonts=chosen, font_sizes=sizes)
    background, ink = random_colours(rng)
    with seeded_captcha(int(rng.integers(2**63))):
        coverage = generator.generate_image(
            label, bg_color=(0, 0, 0), fg_color=(255, 255, 255, 255)
        )
    alpha = np.asarray(coverage.convert("L"), np.float32)[..., None] / 255.0
    pixels = np.array(background) * (1 - alpha) + np.array(ink) * alpha
    return Image.fromarray(pixels.round().astype(np.uint8), "RGB")


def turned_glyph(char: str, font, font_size: int, max_angle: float, rng) -> Image.Image | None:
    """The character's coverage (mode L), turned by up to ``max_angle`` degrees either way and
    cropped to its ink; None for a character with no ink."""
    glyph = Image.new("L", (font_size * 2, font_size * 2), 0)
    ImageDraw.Draw(glyph).text((font_size // 2, font_size // 3), char, font=font, fill=255)
    glyph = glyph.rotate(rng.uniform(-max_angle, max_angle), resample=Image.Resampling.BILINEAR)
    box = glyph.getbbox()
    return glyph.crop(box) if box is not None else None


def draw_lines_style(label: str, size, fonts, rng) -> Image.Image:
    width, height = size
    background, ink = random_colours(rng)
    kind = rng.choice(["flat", "noise", "gradient"])
    if kind == "flat":
        canvas = np.full((height, width, 3), background, np.float32)
    elif kind == "noise":
        canvas = np.array(background, np.float32) + rng.normal(0, 25, (height, width, 3))
    else:
        ramp = np.linspace(0, 1, width)[None, :, None]
        other = np.array(random_colours(rng)[0], np.float32)
        canvas = np.array(background, np.float32) * (1 - ramp) + other * ramp
        canvas = np.broadcast_to(canvas, (height, width, 3)).copy()
    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8), "RGB")
    font_path = fonts[int(rng.integers(len(fonts)))]
    font_size = int(height * rng.uniform(0.55, 0.85))
    font = ImageFont.truetype(font_path, font_size)
    advance = width / (len(label) + rng.uniform(0.3, 1.2))
    x = rng.uniform(0.1, 0.5) * advance
    for char in label:
        glyph = turned_glyph(char, font, font_size, 25, rng)
        if glyph is None:
            continue
        y = int((height - glyph.height) / 2 + rng.uniform(-0.15, 0.15) * height)
        colour = tuple(int(np.clip(v + rng.integers(-30, 31), 0, 255)) for v in ink)
        image.paste(Image.new("RGB", glyph.size, colour), (int(x), y), glyph)
        x += advance * rng.uniform(0.8, 1.1)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.choice([0, 0, 1, 2, 3, 5, 8, 12]))):
        grey = rng.random() < 0.6
        colour = tuple([int(rng.integers(0, 200))] * 3) if grey else tuple(rng.integers(0, 220, 3))
        points = [(int(rng.integers(0, width)), int(rng.integers(0, height))) for _ in range(2)]
        draw.line(points, fill=tuple(int(v) for v in colour), width=int(rng.integers(1, 6)))
    for _ in range(int(rng.choice([0, 0, 50, 200, 600]))):
        px, py = int(rng.integers(0, width)), int(rng.integers(0, height))
        radius = int(rng.integers(0, 2))
        draw.ellipse((px, py, px + radius, py + radius), fill=tuple(int(v) for v in ink))
    return image


def wavy_line(width: int, height: int, rng: np.random.Generator) -> list[tuple[float, float]]:
    """A line across much of the image, mostly through its middle, that bends as it goes."""
    x0 = rng.uniform(-0.2, 0.5) * width
    x1 = x0 + rng.uniform(0.4, 1.0) * width
    y = rng.uniform(0.15, 0.85) * height
    slope = rng.uniform(-1.0, 1.0) * height / width
    points, steps = [], int(rng.integers(8, 20))
    for x in np.linspace(x0, x1, steps):
        points.append((float(x), float(y)))
        slope += rng.normal(0, 0.08) * height / width
        y += slope * (x1 - x0) / steps + rng.normal(0, 0.015 * height)
    return points


def draw_securimage_style(label: str, size, fonts, rng) -> Image.Image:
    """Grey text in a bold face, letters touching, under many wavy lines (some thick, in or
    near the text's own grey) and a sprinkle of small marks: PHP Securimage's look."""
    width, height = size
    bg = int(rng.integers(225, 256))
    image = Image.new("L", (width, height), bg)
    bold = [f for f in fonts if "Bold" in f] or fonts
    font_size = int(height * rng.uniform(0.5, 0.75))
    font = ImageFont.truetype(bold[int(rng.integers(len(bold)))], font_size)
    text_grey = int(rng.integers(90, 175))
    advance = min(width / (len(label) + 0.5), font_size * rng.uniform(0.5, 0.75))
    x = rng.uniform(0.05, 0.95) * max(1.0, width - advance * (len(label) + 0.5))
    baseline = (height - font_size) / 2 + rng.uniform(-0.15, 0.15) * height
    for char in label:
        glyph = turned_glyph(char, font, font_size, 15, rng)
        if glyph is None:
            continue
        y = int(baseline + (font_size - glyph.height) * 0.6 + rng.uniform(-0.05, 0.05) * height)
        image.paste(Image.new("L", glyph.size, text_grey), (int(x), y), glyph)
        x += advance * rng.uniform(0.85, 1.1)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 12))):
        thick = rng.random() < 0.7
        grey = int(np.clip(text_grey + rng.integers(-40, 20 if thick else 80), 0, 230))
        line_width = int(rng.integers(2, 5)) if thick else 1
        draw.line(wavy_line(width, height, rng), fill=grey, width=line_width, joint="curve")
    for _ in range(int(rng.choice([0, 100, 300, 600]))):
        px, py = int(rng.integers(0, width)), int(rng.integers(0, height))
        grey = int(rng.integers(100, 200))
        if rng.random() < 0.5:  # a small cross
            draw.line((px - 1, py, px + 1, py), fill=grey)
            draw.line((px, py - 1, px, py + 1), fill=grey)
        else:
            draw.point((px, py), fill=grey)
    return image.convert("RGB")


DRAWINGS = (draw_package_style, draw_lines_style, draw_securimage_style)
DRAWING_SHARES = (0.4, 0.35, 0.25)


def post_process(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    if rng.random() < 0.2:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    if rng.random() < 0.1:
        image = Image.fromarray(255 - np.asarray(image))
    if rng.random() < 0.1:
        grey = np.asarray(image.convert("L"))
        image = Image.fromarray(((grey > grey.mean()) * 255).astype(np.uint8)).convert("1")
    return image


def draw_one(args: tuple[int, int, str]) -> tuple[str, str]:
    index, seed, folder = args
    rng = np.random.default_rng([seed, index])
    fonts = font_files()
    label = random_label(rng)
    size = random_size(rng, len(label))
    draw = rng.choice(DRAWINGS, p=DRAWING_SHARES)
    image = post_process(draw(label, size, fonts, rng), rng)
    jpeg = image.mode != "1" and rng.random() < 0.3
    path = Path(folder) / f"{index:06d}.{'jpg' if jpeg else 'png'}"
    if jpeg:
        image.save(path, quality=int(rng.integers(20, 90)))
    else:
        image.save(path)
    return path.name, label


def draw_set(folder: Path, count: int, seed: int) -> Path:
    """Draw ``count`` captchas into ``folder`` with a ``labels.csv``; returns the CSV."""
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(i, seed, str(folder)) for i in range(count)]
    with multiprocessing.Pool() as pool:
        rows = pool.map(draw_one, jobs, chunksize=200)
    labels = folder / "labels.csv"
    with open(labels, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    return labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=40000, help="synthetic captchas to draw")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--time-limit", type=float, help="seconds of training at most")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", default="runs/base", help="where the training run goes")
    parser.add_argument("--data", help="draw into this folder (kept) instead of a temp one")
    parser.add_argument("--no-install", action="store_true", help="don't copy into the package")
    parser.add_argument("--install", metavar="RUN_DIR", help="only copy this finished run in")
    parser.add_argument(
        "--init", help="go on from this base run folder (e.g. the last one, for more epochs)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from captcha_ocr.config import TrainConfig
    from captcha_ocr.export import export_run
    from captcha_ocr.train import train

    if args.install:
        run_dir = Path(args.install)
        onnx = run_dir / "model.onnx"
        install(run_dir, onnx if onnx.is_file() else export_run(run_dir))
        return 0

    with tempfile.TemporaryDirectory(prefix="base-model-") as tmp:
        folder = Path(args.data) if args.data else Path(tmp)
        started = time.time()
        labels = folder / "labels.csv"
        if not labels.is_file():
            labels = draw_set(folder, args.images, args.seed)
        print(f"drew {args.images} captchas in {time.time() - started:.0f} s", flush=True)
        config = TrainConfig(
            width=INPUT_SIZE[0],
            height=INPUT_SIZE[1],
            epochs=args.epochs,
            seed=args.seed,
            val_fraction=min(0.05, 2000 / args.images) if args.images > 40 else 0.1,
            time_limit=args.time_limit,
            patience=max(3, args.epochs),
            min_accuracy=0.0,  # a judgement for users' runs; this one is judged below
            rescue=False,
            init=args.init,
        )
        result = train(labels, args.out, config, progress=sys.stdout.isatty())
        onnx = export_run(result.run_dir)
    best = result.best
    accuracy = 1 - best.get("val_wer", math.nan)
    print(f"base model: {result.run_dir}, validation accuracy {accuracy:.1%} (synthetic)")
    if not args.no_install:
        install(result.run_dir, onnx)
    return 0


def install(run_dir: Path, onnx: Path) -> None:
    """Copy a finished base run into the package (``src/captcha_ocr/base_model/``)."""
    from captcha_ocr.model import load_keras_model
    from captcha_ocr.runfolder import BEST_MODEL, CONFIG_FILE

    PACKAGE_DIR.mkdir(exist_ok=True)
    shutil.copy2(run_dir / CONFIG_FILE, PACKAGE_DIR / CONFIG_FILE)
    # Without the optimizer's state (two more copies of every weight): fine-tuning starts
    # an optimizer of its own.
    load_keras_model(run_dir / BEST_MODEL).save(PACKAGE_DIR / BEST_MODEL)
    shutil.copy2(onnx, PACKAGE_DIR / "model.onnx")
    print(f"installed {run_dir} into {PACKAGE_DIR}")


if __name__ == "__main__":
    sys.exit(main())
