"""Synthetic captchas: draw labeled images with the ``captcha`` package (``captcha-ocr synth``),
and pre-train on ones that imitate a data set (``train --pretrain synth``).

Drawing needs no Keras; :func:`pretrain_on_synth` imports the training side when it runs.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import random
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageFont

from captcha_ocr.charset import DEFAULT_CHARSET
from captcha_ocr.config import ADAPT_NONE, TIME_LIMIT_NONE, ModelSpec, TrainConfig
from captcha_ocr.data import Sample, most_common_size, split_samples
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.files import atomic_path
from captcha_ocr.images import ImageLoadError, border_colour, load_image
from captcha_ocr.progress import progress_bar
from captcha_ocr.runfolder import (
    BEST_MODEL,
    HISTORY_FILE,
    LAST_MODEL,
    PRETRAIN_DIR,
    RunState,
    read_history,
)

log = logging.getLogger(__name__)


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
def seeded_captcha(seed: int) -> Iterator[None]:
    """Inside the block the ``captcha`` package draws from ``seed``, not the OS."""
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
    with seeded_captcha(seed):
        from captcha.image import ImageCaptcha

        # Font sizes follow the image height (the package's defaults suit 60 px).
        font_sizes = tuple(max(10, int(height * f)) for f in (0.7, 0.8, 0.9))
        generator = ImageCaptcha(
            width=width,
            height=height,
            fonts=[str(font) for font in fonts] or None,
            font_sizes=font_sizes,
        )
        for _ in progress_bar(range(count), desc="drawing captchas", unit="img", enabled=progress):
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


# The share of the synthetic captchas that validates the pre-training (picks its best epoch).
PRETRAIN_VAL_FRACTION = 0.05


def pretrain_on_synth(
    samples: list[Sample],
    spec: ModelSpec,
    config: TrainConfig,
    run_dir: Path,
    progress: bool,
    strategy=None,
) -> list[np.ndarray]:
    """Pre-train on generated captchas that imitate ``samples`` (charset, label lengths, size,
    colours); returns the weights of the best pre-training epoch.

    The pre-training run is kept in ``run_dir/pretrain`` (checkpoints, state, history,
    curves), its images are not: they are seeded, so a resumed pre-training draws the same
    ones again. A pre-training that already ended is not run again (its best model is
    reloaded); one that Ctrl-C interrupted goes on from its last complete epoch. Ctrl-C
    raises ``KeyboardInterrupt`` here, once that epoch's files are saved.
    """
    from captcha_ocr.fit import fit  # the training side (Keras): drawing alone needs none
    from captcha_ocr.model import load_keras_model

    folder = run_dir / PRETRAIN_DIR
    state = RunState.load(folder) if (folder / LAST_MODEL).is_file() else RunState()
    if not state.finished:
        lengths = (min(len(s.label) for s in samples), max(len(s.label) for s in samples))
        chars = synth_safe_chars(spec.charset)
        if not chars:
            raise CaptchaOCRError("--pretrain synth cannot draw any of this data set's characters")
        colours = estimate_colours(samples[:64])
        # Drawn at the data's own size, so that both go through the same resize to the input.
        size = most_common_size(samples)
        pre_config = dataclasses.replace(
            config,
            pretrain=None,
            epochs=config.pretrain_epochs,
            patience=config.pretrain_epochs,
            time_limit=TIME_LIMIT_NONE,
            extend=ADAPT_NONE,  # a fixed first stage: the fine-tuning is what adapts
            shorten=ADAPT_NONE,
        )
        log.info(
            "%s on %d synthetic captchas (%s, lengths %d-%d, %dx%d) for %d epochs",
            "resuming pre-training" if state.epochs_done else "pre-training",
            config.pretrain_images,
            chars,
            *lengths,
            *size,
            pre_config.epochs,
        )
        history = read_history(folder / HISTORY_FILE)[: state.epochs_done]
        state.stop_reason = ""
        with tempfile.TemporaryDirectory(prefix="captcha-ocr-synth-") as tmp:
            synth = synthesize(
                tmp,
                config.pretrain_images,
                chars,
                lengths,
                size,
                seed=config.seed,
                progress=progress,
                colours=colours,
            )
            synth_train, synth_val = split_samples(synth, PRETRAIN_VAL_FRACTION, config.seed)
            folder.mkdir(parents=True, exist_ok=True)
            result = fit(
                folder, spec, pre_config, synth_train, synth_val, state, history, progress,
                resume=state.epochs_done > 0, strategy=strategy,
            )  # fmt: skip
        if result.state.interrupted or not (folder / BEST_MODEL).is_file():
            raise KeyboardInterrupt
    best = load_keras_model(folder / BEST_MODEL)
    log.info("pre-training done; fine-tuning on the real images")
    return best.get_weights()
