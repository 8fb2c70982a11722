"""Typed, frozen settings: precedence, key and type errors, validation, YAML round trips."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from captcha_ocr.config import (
    CONFIG_FILE,
    AugmentConfig,
    ModelSpec,
    TrainConfig,
    from_dict,
    load_run_config,
    load_yaml,
    merge,
    resolve_train_config,
    save_run_config,
    validate_train_config,
)
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.presets import FINE_TUNE, PRESETS

SPEC = ModelSpec(
    preset="tiny",
    charset="2345678bcdefgmnpwxy",
    height=50,
    width=200,
    channels=1,
    max_label_length=5,
)


def test_defaults():
    """From random weights the defaults are TrainConfig's; a default run starts from the base
    model and takes the fine-tuning recipe on top."""
    scratch = resolve_train_config(cli_overrides={"init": "none"})
    assert scratch == dataclasses.replace(TrainConfig(), init="none")
    assert resolve_train_config() == merge(TrainConfig(), FINE_TUNE)
    assert resolve_train_config().preset == "default"


def test_fine_tuning_recipe_applies_to_runs_from_a_model_and_yields_to_the_user():
    fine = resolve_train_config(cli_overrides={"init": "runs/latest"})
    assert fine.batch_size == FINE_TUNE["batch_size"] != TrainConfig().batch_size
    assert fine.augment.probability == FINE_TUNE["augment"]["probability"]
    assert fine.augment.rotation == AugmentConfig().rotation  # the rest of the section kept
    synth = resolve_train_config(cli_overrides={"pretrain": "synth"})
    assert synth.batch_size == TrainConfig().batch_size  # random weights, then synthetic ones
    given = resolve_train_config(
        file_overrides={"batch_size": 8}, cli_overrides={"learning_rate": 1e-3}
    )
    assert (given.batch_size, given.learning_rate) == (8, 1e-3)
    assert given.augment.probability == FINE_TUNE["augment"]["probability"]
    assert resolve_train_config("tiny", cli_overrides={"init": "x"}).batch_size == 16  # its own


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig().epochs = 3  # type: ignore[misc]


def test_preset_recipe_over_defaults():
    config = resolve_train_config("reference")
    assert config.preset == "reference"
    assert config.optimizer == "adam"
    assert config.batch_size == 64
    assert config.channels == 3
    assert config.augment.contrast == 0.0
    assert config.augment.rotation == AugmentConfig().rotation  # untouched by the recipe
    assert config.seed == TrainConfig().seed


def test_file_over_preset_and_cli_over_file():
    config = resolve_train_config(
        "reference",
        file_overrides={"batch_size": 8, "epochs": 5, "augment": {"rotation": 7}},
        cli_overrides={"batch_size": 4, "epochs": None, "seed": 1},
    )
    assert config.batch_size == 4  # cli beats file beats preset (64)
    assert config.epochs == 5  # file beats preset (1000); a None flag is "not given"
    assert config.seed == 1
    assert config.optimizer == "adam"  # preset beats defaults
    # Nested sections merge key by key across all layers.
    assert config.augment.rotation == 7.0
    assert config.augment.contrast == 0.0
    assert config.augment.brightness == AugmentConfig().brightness


def test_cli_nested_override():
    config = resolve_train_config(
        file_overrides={"augment": {"rotation": 7, "noise": 0.5}},
        cli_overrides={"augment": {"rotation": 1}},
    )
    assert config.augment.rotation == 1.0
    assert config.augment.noise == 0.5


def test_preset_chosen_in_file_or_cli():
    assert (
        resolve_train_config(file_overrides={"preset": "tiny"}).epochs
        == PRESETS["tiny"].recipe["epochs"]
    )
    config = resolve_train_config(
        "default", file_overrides={"preset": "tiny"}, cli_overrides={"preset": "reference"}
    )
    assert config.preset == "reference"
    assert config.epochs == 1000
    # A file's explicit value still beats the preset the cli picked.
    assert (
        resolve_train_config(
            file_overrides={"epochs": 3}, cli_overrides={"preset": "reference"}
        ).epochs
        == 3
    )


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"epoch": 3}, "epoch"),
        ({"augment": {"rotate": 1.0}}, "augment.rotate"),
        ({"learningrate": 1e-3, "batch_size": 2}, "learningrate"),
    ],
)
def test_unknown_keys_named(overrides, key):
    with pytest.raises(CaptchaOCRError, match=rf"unknown config key\(s\) {key}\b"):
        resolve_train_config(file_overrides=overrides)
    with pytest.raises(CaptchaOCRError, match=rf"\b{key}\b"):
        resolve_train_config(cli_overrides=overrides)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"epochs": "ten"}, "epochs"),
        ({"epochs": 3.5}, "epochs"),
        ({"epochs": True}, "epochs"),
        ({"learning_rate": "fast"}, "learning_rate"),
        ({"learning_rate": False}, "learning_rate"),
        ({"optimizer": 3}, "optimizer"),
        ({"ignore_case": "yes"}, "ignore_case"),
        ({"height": "50"}, "height"),
        ({"label_pattern": 7}, "label_pattern"),
        ({"augment": {"rotation": "x"}}, "augment.rotation"),
    ],
)
def test_wrong_types_named(overrides, key):
    with pytest.raises(CaptchaOCRError, match=rf"config key '{key}' must be"):
        resolve_train_config(file_overrides=overrides)


def test_section_must_be_a_mapping():
    with pytest.raises(CaptchaOCRError, match="'augment' must be a mapping"):
        resolve_train_config(file_overrides={"augment": 5})


def test_gentle_coercions():
    config = resolve_train_config(
        file_overrides={
            "learning_rate": "1e-3",
            "warmup_epochs": 2,
            "height": None,
            "time_limit": 30,
        }
    )
    assert config.learning_rate == 1e-3
    assert isinstance(config.warmup_epochs, float)
    assert config.height is None
    assert config.time_limit == 30.0
    assert from_dict(AugmentConfig, {"rotation": 5}).rotation == 5.0


@pytest.mark.parametrize("preset", ["huge", "", "Default"])
def test_unknown_preset(preset):
    with pytest.raises(CaptchaOCRError, match="unknown preset"):
        resolve_train_config(preset)
    with pytest.raises(CaptchaOCRError, match="unknown preset"):
        resolve_train_config(cli_overrides={"preset": preset or "x"})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"optimizer": "sgd"}, "optimizer"),
        ({"schedule": "step"}, "schedule"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"val_fraction": 0.0}, "val_fraction"),
        ({"channels": 2}, "channels"),
        ({"height": 4}, "height"),
        ({"width": 7}, "width"),
        ({"patience": 0}, "patience"),
        ({"pretrain": "imagenet"}, "pretrain"),
        ({"augment": {"probability": 1.5}}, "augment.probability"),
    ],
)
def test_validate_rejects_bad_values(overrides, message):
    with pytest.raises(CaptchaOCRError, match=rf"bad config: {message}"):
        resolve_train_config(file_overrides=overrides)


def test_validate_accepts_the_presets():
    for preset in PRESETS:
        validate_train_config(resolve_train_config(preset))


def test_run_config_round_trip(tmp_path):
    train = resolve_train_config(
        "tiny",
        file_overrides={
            "label_pattern": r"^\d+_(?P<label>\w+)$",
            "ignore_case": True,
            "height": 50,
            "time_limit": 12.5,
            "augment": {"rotation": 4.5, "noise": 0.0},
        },
    )
    data = {"train_samples": 900, "val_samples": 100, "source": "data/captchas", "labels": ["007"]}
    save_run_config(tmp_path, SPEC, train, data)
    text = (tmp_path / CONFIG_FILE).read_text()
    assert "!!python" not in text
    spec_back, train_back, data_back = load_run_config(tmp_path)
    assert spec_back == SPEC
    assert train_back == train
    assert data_back == data
    assert data_back["labels"] == ["007"]  # strings stay strings


def test_load_run_config_without_configs_yaml(tmp_path):
    with pytest.raises(CaptchaOCRError, match=rf"not a run folder: {CONFIG_FILE} is missing"):
        load_run_config(tmp_path)


def test_load_run_config_missing_section(tmp_path):
    (tmp_path / CONFIG_FILE).write_text(yaml.safe_dump({"model": dataclasses.asdict(SPEC)}))
    with pytest.raises(CaptchaOCRError, match="no 'train' section"):
        load_run_config(tmp_path)


def test_load_run_config_bad_model_section(tmp_path):
    model = dataclasses.asdict(SPEC)
    del model["charset"]
    (tmp_path / CONFIG_FILE).write_text(yaml.safe_dump({"model": model, "train": {}}))
    with pytest.raises(CaptchaOCRError, match="charset"):
        load_run_config(tmp_path)
    model["charset"] = "abc"
    model["colour"] = "red"
    (tmp_path / CONFIG_FILE).write_text(yaml.safe_dump({"model": model, "train": {}}))
    with pytest.raises(CaptchaOCRError, match=r"model\.colour"):
        load_run_config(tmp_path)


def test_python_object_tag_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / CONFIG_FILE).write_text(
        f'model: !!python/object/apply:os.system ["touch {marker}"]\ntrain: {{}}\n'
    )
    with pytest.raises(CaptchaOCRError, match="not valid YAML"):
        load_run_config(tmp_path)
    assert not marker.exists()


def test_load_yaml(tmp_path):
    with pytest.raises(CaptchaOCRError, match="not found"):
        load_yaml(tmp_path / "missing.yaml")
    (tmp_path / "empty.yaml").write_text("")
    assert load_yaml(tmp_path / "empty.yaml") == {}
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(CaptchaOCRError, match="mapping"):
        load_yaml(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("epochs: [1, 2\n")
    with pytest.raises(CaptchaOCRError, match="not valid YAML"):
        load_yaml(tmp_path / "broken.yaml")
    (tmp_path / "ok.yaml").write_text("epochs: 5\naugment:\n  rotation: 2\n")
    assert (
        resolve_train_config(file_overrides=load_yaml(tmp_path / "ok.yaml")).augment.rotation == 2.0
    )
