"""Every preset in one place: its network, training recipe and input-size rules. No Keras.

A preset is chosen by name (``--preset``, ``TrainConfig.preset``, ``ModelSpec.preset``).
``config`` applies its recipe, ``data`` its input-size rule, ``model`` builds its network
(``model.BUILDERS`` maps :attr:`Preset.builder` to a Keras function). A new preset is one
entry in :data:`PRESETS` and, for a new network, one builder in ``model``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.sizes import ImageSize


@dataclass(frozen=True)
class ScaleUp:
    """Images lower than ``below`` px are read at ``to`` px high, keeping their aspect ratio.

    >>> rule = ScaleUp(below=48, to=64)
    >>> rule.apply(ImageSize(200, 50)), rule.apply(ImageSize(100, 40))
    (ImageSize(width=200, height=50), ImageSize(width=160, height=64))
    """

    below: int
    to: int

    def apply(self, size: ImageSize) -> ImageSize:
        if size.height >= self.below:
            return size
        return ImageSize(max(1, round(size.width * self.to / size.height)), self.to)


@dataclass(frozen=True)
class WidthStride:
    """Pixels per output time step: ``wide``, unless that leaves fewer than
    ``steps_per_character`` steps to each character of the longest label; then ``narrow``.

    >>> stride = WidthStride(wide=8, narrow=4, steps_per_character=6)
    >>> stride.pixels(240, 5), stride.pixels(200, 5), stride.pixels(100, 4)
    (8, 4, 4)
    """

    wide: int
    narrow: int
    steps_per_character: int

    def pixels(self, width: int, max_label_length: int) -> int:
        enough = width // self.wide >= self.steps_per_character * max_label_length
        return self.wide if enough else self.narrow


@dataclass(frozen=True)
class Preset:
    """One preset: which network, how to train it, what input it takes."""

    builder: str  # the network: a key of model.BUILDERS
    min_size: ImageSize  # smallest input the network takes (every pooling stage non-empty)
    recipe: dict[str, Any] = field(default_factory=dict)  # TrainConfig values it changes
    # TrainConfig values a run that starts from a trained model (the base model, --init RUN)
    # takes on top of the recipe; a config file or flag still wins. Only the base model's
    # network has one, and "init: auto" starts from the base for that preset alone.
    fine_tune: dict[str, Any] = field(default_factory=dict)
    scale_up: ScaleUp | None = None  # small images read larger; None: at the data's own size
    width_stride: WidthStride | None = None  # networks whose time step follows the labels
    # Networks whose time steps read their feature map row by row (not column by column):
    # how many input pixels across one column of that map covers. The tutorial's network
    # pools 16x and reads its 4x13 map (50x200 input) a row at a time: step t lies in column
    # t % 13. None: step t of T covers the t-th T-th of the width.
    row_by_row_stride: int | None = None

    @property
    def channels(self) -> int:
        """The input's channels unless ``--channels`` says otherwise: 1 grey, 3 RGB."""
        return self.recipe.get("channels") or 1

    def input_size(self, data_size: ImageSize) -> ImageSize:
        """The model input for data of ``data_size`` (its most common size)."""
        return self.scale_up.apply(data_size) if self.scale_up else data_size


# The default network pools the height 16x, so a 40 px image leaves it 2 rows to tell glyphs
# apart. Measured on 100x40 captchas (2,000 images, 300 test, one run each): read at 40 px
# 94.0 %, scaled to 48 px 95.7 %, to 64 px 97.0 % (95.7 % over 3 seeds); scaling only the
# width (160x40) gave 94.7 %, a wider network 92.7 %. Sets at least 48 px high (the 200x50
# reference set reads 99 % as it is) keep their size and speed. Only the default preset
# scales: "reference" is the tutorial's recipe as it was, and "tiny" (tests, smoke runs) is
# not about accuracy.
SMALL_IMAGES = ScaleUp(below=48, to=64)

# Time steps per character below which the default network halves its step to 4 px. Measured
# on synthetic styles with 2,000 images: 4 px instead of 8 took 100x40 images with 5 characters
# (2.4 steps a character) from 87 % to 93 %, and 200x60 with 6 (4.2 steps) from 96 % to 99 %.
# At 5 steps a character (captcha_images_v2, 200x50, 5 characters) 4 px still read better:
# 5-fold 99.62 % against 99.33 %, the hard fold 98.56 % against 97.60 % (bench/RESULTS.md,
# "stride-six-steps"), so 8 px needs 6 steps a character.
# The "crnn" network takes these two strides only (its third pooling is 2x2 or 2x1).
LONG_LABELS = WidthStride(wide=8, narrow=4, steps_per_character=6)

# A run that starts from a trained model has left the blank plateau before its first step;
# what limits it is how far it gets in its (shorter) budget. Measured on rkn_securimage (seed 0,
# 20 epochs from the base model, held-out fifth): the from-scratch recipe (batch 32, 2e-3,
# 90 % of images augmented) read 92.2 %; batch 16 93.3 %, peak 3e-3 93.8 %, half the images
# augmented 93.6 %, batch 16 and half augmented 94.7 %, all three 94.7 % (bench/RESULTS.md,
# "rkn-recipe"). Without augmentation the best epoch was the 6th (92.2 %).
# The jitter of brightness and contrast stays, though rkn_securimage draws text and lines in
# one palette: without it, 3 seeds there read 95.69 % against 95.63 % on one machine (96.45 %
# against 95.21 % on another), and captcha_images_v2 lost 2 of 1,040 reads over 5 folds
# (bench/RESULTS.md, "fine-tune-no-jitter").
FINE_TUNE: dict[str, Any] = {
    "batch_size": 16,
    "learning_rate": 3e-3,
    "augment": {"probability": 0.5},
}

PRESETS: dict[str, Preset] = {
    # A small, fast CRNN; the recommended recipe is TrainConfig's own defaults.
    "default": Preset(
        builder="crnn",
        min_size=ImageSize(16, 16),
        scale_up=SMALL_IMAGES,
        width_stride=LONG_LABELS,
        fine_tune=FINE_TUNE,
    ),
    # The keras.io tutorial's network and recipe, restated: Adam 1e-3, batch 64,
    # reduce-on-plateau 0.9/20, early stopping 40, 1000 epochs, RGB input, raw weights.
    "reference": Preset(
        builder="tutorial_resnet",
        min_size=ImageSize(16, 16),
        row_by_row_stride=16,
        recipe={
            "channels": 3,
            "epochs": 1000,
            "batch_size": 64,
            "learning_rate": 1e-3,
            "optimizer": "adam",
            "weight_decay": 0.0,
            "schedule": "plateau",
            "patience": 40,
            "prefer_later": False,
            "ema": False,
            "augment": {"contrast": 0.0, "shear": 0.0, "translate": 0.0, "noise": 0.0},
        },
    ),
    # A few thousand parameters: for tests and smoke runs, not for accuracy. So a run that
    # reads nothing is no failure (min_accuracy 0) and a stuck one does not start again.
    "tiny": Preset(
        builder="tiny_crnn",
        min_size=ImageSize(8, 8),
        recipe={
            "epochs": 20,
            "batch_size": 16,
            "learning_rate": 3e-3,
            "warmup_epochs": 1.0,
            "min_accuracy": 0.0,
            "rescue": False,
        },
    ),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; an error naming the known ones.

    >>> get_preset("reference").channels
    3
    """
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise CaptchaOCRError(
            f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}"
        ) from None
