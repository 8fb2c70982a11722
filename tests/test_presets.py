"""The preset registry and the image-size type: one place for each preset's facts, no Keras."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from captcha_ocr.cli import build_parser
from captcha_ocr.config import TrainConfig, resolve_train_config
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.presets import PRESETS, SMALL_IMAGES, get_preset
from captcha_ocr.sizes import ImageSize
from tests.helpers import assert_runs_without


def test_image_size_is_width_first_and_names_its_sides() -> None:
    size = ImageSize(width=200, height=50)
    assert size == (200, 50) and (size.width, size.height) == (200, 50)
    assert str(size) == "200x50" and f"{size} px" == "200x50 px"
    assert size.shape(3) == (50, 200, 3)  # NumPy's and Keras' order
    assert size.covers(ImageSize(16, 16)) and not ImageSize(200, 10).covers(ImageSize(16, 16))


def test_every_recipe_is_valid_train_config() -> None:
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for name, preset in PRESETS.items():
        assert set(preset.recipe) <= fields, name
        config = resolve_train_config(name)
        assert config.preset == name
        assert (config.channels or 1) == preset.channels


def test_presets_carry_what_the_modules_once_held() -> None:
    assert {name: p.min_size for name, p in PRESETS.items()} == {
        "default": (16, 16),
        "reference": (16, 16),
        "tiny": (8, 8),
    }
    assert {name: p.channels for name, p in PRESETS.items()} == {
        "default": 1,
        "reference": 3,
        "tiny": 1,
    }
    stride = PRESETS["default"].width_stride
    assert (stride.pixels(240, 5), stride.pixels(200, 5), stride.pixels(100, 4)) == (8, 4, 4)
    assert PRESETS["reference"].width_stride is None and PRESETS["tiny"].width_stride is None


@pytest.mark.parametrize(
    ("preset", "data", "expected"),
    [
        ("default", (200, 50), (200, 50)),  # 48 px and up: as they are
        ("default", (200, 48), (200, 48)),
        ("default", (100, 40), (160, 64)),  # lower: 64 px high, same aspect ratio
        ("default", (30, 10), (192, 64)),
        ("reference", (100, 40), (100, 40)),  # only the default preset scales
        ("tiny", (100, 40), (100, 40)),
    ],
)
def test_input_size_scales_small_images_for_the_default_preset_only(
    preset: str, data: tuple[int, int], expected: tuple[int, int]
) -> None:
    size = get_preset(preset).input_size(ImageSize(*data))
    assert isinstance(size, ImageSize) and size == expected


def test_unknown_preset_names_the_known_ones() -> None:
    with pytest.raises(CaptchaOCRError, match="unknown preset 'huge'; choose one of default, "):
        get_preset("huge")
    with pytest.raises(CaptchaOCRError, match="unknown preset"):
        resolve_train_config(file_overrides={"preset": ["default"]})  # YAML list, not a name


def test_height_help_gives_the_registry_numbers() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for command in ("train", "inspect", "augment-preview"):
        [height] = [a for a in subparsers[command]._actions if a.dest == "height"]
        assert f"under {SMALL_IMAGES.below} px scaled to {SMALL_IMAGES.to}" in height.help


def test_registry_and_the_modules_that_read_it_import_no_keras() -> None:
    code = (
        "import captcha_ocr.cli, captcha_ocr.config, captcha_ocr.data, captcha_ocr.survey\n"
        "import captcha_ocr.presets, captcha_ocr.sizes\n"
    )
    assert_runs_without(("tensorflow", "keras"), code, timeout=60)


def test_every_builder_exists_and_refuses_inputs_under_its_minimum() -> None:
    from captcha_ocr.config import ModelSpec
    from captcha_ocr.model import BUILDERS, build_model

    for name, preset in PRESETS.items():
        assert preset.builder in BUILDERS, name
        low = preset.min_size.height - 1
        spec = ModelSpec(name, "ab", height=low, width=64, channels=1, max_label_length=2)
        with pytest.raises(CaptchaOCRError, match=f"at least {preset.min_size} px"):
            build_model(spec)


def test_model_input_size_follows_flags_then_preset() -> None:
    from captcha_ocr.data import model_input_size

    data = ImageSize(100, 40)
    assert model_input_size(data, None, None, "default") == (160, 64)
    assert model_input_size(data, None, None, "tiny") == (100, 40)
    assert model_input_size(data, None, 32, "default") == (100, 32)
    assert model_input_size(data, 120, None, "default") == (120, 40)
    assert model_input_size(data, 120, 48, "default") == (120, 48)
    assert isinstance(model_input_size(data, 120, 48, "default"), ImageSize)


def test_python_dash_m_help_still_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "captcha_ocr", "inspect", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "scaled to 64" in result.stdout
