"""Typed, frozen settings: one place for every default, YAML in and out, unknown keys are errors.

A run is described by two dataclasses:

* :class:`TrainConfig`, what the user chose (preset, hyperparameters, augmentation, data rules);
  a YAML file or a CLI flag only overrides it;
* :class:`ModelSpec`, what it takes to rebuild and read the model (charset, input size, ...),
  measured from the data and saved in the run folder and in the ONNX metadata.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from captcha_ocr.basemodel import BASE_DIR
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.files import write_text_atomic
from captcha_ocr.presets import PRESETS, get_preset
from captcha_ocr.runfolder import CONFIG_FILE
from captcha_ocr.sizes import ImageSize
from captcha_ocr.version import __version__

# The two words TrainConfig.init takes besides a run folder or "base" (see its comment).
INIT_AUTO, INIT_NONE = "auto", "none"
# The two words TrainConfig.time_limit takes besides a number of seconds.
TIME_LIMIT_AUTO, TIME_LIMIT_NONE = "auto", "none"
# The two words TrainConfig.extend and TrainConfig.shorten take.
ADAPT_AUTO, ADAPT_NONE = "auto", "none"


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation; every strength at 0 makes it the identity."""

    probability: float = 0.9  # share of training images that get augmented at all
    brightness: float = 0.25  # max shift of mean brightness, as a fraction of 255
    contrast: float = 0.25  # max relative change of contrast around the mean
    rotation: float = 3.0  # max rotation in degrees (captcha text is nearly level)
    shear: float = 0.15  # max horizontal shear (dx/dy); italic-like slant
    translate: float = 0.03  # max shift as a fraction of width and height
    erode_dilate: float = 0.3  # chance of a 3x3 min (thicker ink) or max filter, half strength
    noise: float = 0.02  # std of Gaussian pixel noise, as a fraction of 255
    # True: start augmenting only once the model reads some validation captchas. On
    # rkn_securimage (thick crossing lines) a run with augmentation from the start stayed on
    # the CTC blank plateau, and one without left it after 12 epochs (bench/RESULTS.md, "hard
    # styles"). Off by default: on an amazon subset it cost 37 points (62.7 % against 100 %).
    after_plateau: bool = False


@dataclass(frozen=True)
class TrainConfig:
    """Everything a user can set for training. Defaults are the recommended recipe."""

    preset: str = "default"  # network and recipe: a name in presets.PRESETS
    height: int | None = None  # model input height; None: the most common height in the data
    width: int | None = None  # model input width; None: the most common width in the data
    channels: int | None = None  # 1 (grey) or 3 (RGB); None: the preset's choice
    epochs: int | None = None  # None: the automatic budget of captcha_ocr.epochs
    batch_size: int = 32
    learning_rate: float = 2e-3  # peak learning rate
    optimizer: str = "adamw"  # "adamw" or "adam"
    weight_decay: float = 1e-4  # AdamW decoupled weight decay
    # Validate, keep and export an exponential moving average of the weights (its horizon:
    # epochs.ema_momentum) instead of the last step's weights. False: the raw weights.
    ema: bool = True
    schedule: str = (
        "cosine"  # "cosine" (warm-up then cosine decay) or "plateau" (reduce on plateau)
    )
    warmup_epochs: float = 3.0  # linear warm-up length for the cosine schedule
    patience: int = 40  # early stopping: epochs without a better validation CER (ties: loss);
    # at least 400 optimizer steps, and never before a validation captcha is read right
    # The best checkpoint is the latest epoch whose validation CER is within the noise (one
    # standard error) of the lowest; False: the lowest CER, ties by the lower loss.
    prefer_later: bool = True
    plateau_patience: int = 20  # "plateau" schedule: epochs before the learning rate is cut
    plateau_factor: float = 0.9  # "plateau" schedule: the cut
    val_fraction: float = 0.1  # share of the data held out for validation
    seed: int = 42  # seeds the split, the augmentation and the weights
    label_pattern: str | None = None  # regex with a named group "label", matched on the file stem
    ignore_case: bool = False  # fold labels to lower case
    strict: bool = False  # unreadable images are an error instead of a reported skip
    # Seconds of training at most: once two epochs are timed, the epoch budget (and with it
    # the learning-rate schedule) is shortened to end in time, and training stops there at the
    # latest. "auto": epochs.auto_time_limit with the automatic epoch budget, no limit with an
    # explicit --epochs; "none" (or null): no limit.
    time_limit: float | str | None = TIME_LIMIT_AUTO
    # A run whose validation CER still falls by a good share over the last quarter of its
    # budget gets more epochs, once, within the time limit (epochs.extension): "auto" with the
    # automatic epoch budget (an explicit --epochs is kept as given), "none" (or null): never.
    extend: str | None = ADAPT_AUTO
    # A run that reads its validation images (nearly) all right and has read no more for a few
    # epochs ends a few epochs later, its learning-rate schedule compressed into them
    # (epochs.shortening): "auto" with the automatic epoch budget, "none" (or null): never.
    shorten: str | None = ADAPT_AUTO
    pretrain: str | None = None  # "synth": first train on generated look-alike captchas
    pretrain_images: int = 4000  # how many synthetic captchas to pre-train on
    pretrain_epochs: int = 15  # pre-training budget
    # Where the weights start: a run folder (its weights, wherever they fit), "base" (the base
    # model the package ships), "none" (random weights), or "auto": "base" for the base's
    # network (the default preset) unless the run pre-trains (--pretrain synth), else "none".
    init: str | None = "auto"
    devices: int = 1  # >1: data-parallel over that many GPUs (MirroredStrategy); no GPU: CPUs
    # A run whose best model reads fewer validation captchas than this did not learn: train
    # says so and exits with status 3 (the model is kept, marked not usable).
    min_accuracy: float = 0.5
    # A run still on the blank plateau after a fair share of its budget starts once more: from
    # random weights with --pretrain synth (the remedy measured to help there), from a trained
    # model (--init) with another seed; False: it only warns.
    rescue: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass(frozen=True)
class ModelSpec:
    """What it takes to rebuild a network and read its output; saved with every model.

    The CTC blank is class 0; character ``charset[i]`` is class ``i + 1``.
    """

    preset: str
    charset: str
    height: int
    width: int
    channels: int
    max_label_length: int
    blank_index: int = 0
    version: str = __version__
    # The shortest label trained on (0: not known, a model made before it was kept). A read
    # of a length outside min..max_label_length is surely wrong: the reader takes the best
    # path of those lengths instead (decode.decode_batch).
    min_label_length: int = 0

    @property
    def num_classes(self) -> int:
        return len(self.charset) + 1

    @property
    def label_lengths(self) -> tuple[int, int]:
        """The shortest and the longest text the model reads (see decode.length_decode)."""
        return self.min_label_length, self.max_label_length

    @property
    def input_size(self) -> ImageSize:
        return ImageSize(self.width, self.height)


def _check_type(name: str, value: Any, annotation: Any) -> Any:
    """Check (and gently coerce) one value against its annotation; raise naming the key."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_type(name, value, option)
            except CaptchaOCRError as error:
                errors.append(error)
        raise errors[0]
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):
        try:  # YAML reads "1e-3" as a string
            return float(value)
        except ValueError:
            pass
    if annotation in (int, float, str, bool):
        if isinstance(value, bool) and annotation is not bool:
            raise CaptchaOCRError(
                f"config key {name!r} must be {annotation.__name__}, got {value!r}"
            )
        if not isinstance(value, annotation):
            raise CaptchaOCRError(
                f"config key {name!r} must be {annotation.__name__}, got {value!r}"
            )
        return value
    if dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value, prefix=f"{name}.")
    return value


def from_dict(cls: type, data: dict[str, Any] | Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping; unknown keys and wrong types are errors.

    >>> from_dict(AugmentConfig, {"rotation": 5}).rotation
    5.0
    """
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise CaptchaOCRError(
            f"config section {prefix.rstrip('.') or cls.__name__!r} must be a mapping"
        )
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise CaptchaOCRError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
            f"known keys: {', '.join(sorted(names))}"
        )
    values = {key: _check_type(prefix + key, value, hints[key]) for key, value in data.items()}
    try:
        return cls(**values)
    except TypeError as error:
        raise CaptchaOCRError(f"config {cls.__name__}: {error}") from None


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as plain, YAML-ready data."""
    return dataclasses.asdict(obj)


def merge(base: Any, overrides: dict[str, Any]) -> Any:
    """Return ``base`` (a dataclass) with ``overrides`` applied; nested sections merge too."""
    data = to_dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return from_dict(type(base), data)


def resolve_train_config(
    preset: str = "default",
    file_overrides: dict[str, Any] | None = None,
    cli_overrides: dict[str, Any] | None = None,
) -> TrainConfig:
    """Defaults, then the preset's recipe (and its fine-tuning recipe when the run starts from
    a trained model), then a config file, then command-line flags.

    >>> resolve_train_config("reference").optimizer
    'adam'
    >>> fine, scratch = resolve_train_config(), resolve_train_config(cli_overrides={"init": "none"})
    >>> fine.batch_size < scratch.batch_size, resolve_train_config(cli_overrides={"batch_size": 8}).batch_size
    (True, 8)
    """
    file_overrides = dict(file_overrides or {})
    cli_overrides = {k: v for k, v in (cli_overrides or {}).items() if v is not None}
    preset = cli_overrides.get("preset", file_overrides.get("preset", preset))
    recipe = merge(TrainConfig(), {**get_preset(preset).recipe, "preset": preset})
    config = merge(merge(recipe, file_overrides), cli_overrides)
    if starts_from_a_model(config):
        recipe = merge(recipe, get_preset(preset).fine_tune)
        config = merge(merge(recipe, file_overrides), cli_overrides)
    validate_train_config(config)
    return config


def starts_from_a_model(config: TrainConfig) -> bool:
    """Whether the run starts from a trained model's weights: ``init`` names a run or the base
    model, or is ``auto`` where :func:`auto_init_is_base`."""
    if config.init in (None, INIT_NONE):
        return False
    return config.init != INIT_AUTO or auto_init_is_base(config)


def auto_init_is_base(config: TrainConfig) -> bool:
    """Whether ``init: auto`` means the base model: the package ships one, the preset is its
    network (the one preset with a fine-tuning recipe) and the run does not pre-train on
    synthetic captchas. ``warmstart.resolve_init`` makes ``auto`` concrete by this rule."""
    return (
        config.pretrain is None
        and bool(get_preset(config.preset).fine_tune)
        and (BASE_DIR / CONFIG_FILE).is_file()
    )


def time_limit_seconds(config: TrainConfig) -> float | None:
    """The run's time limit in seconds, or None for none (``auto`` is made concrete when the
    run is planned; unresolved, it limits nothing).

    >>> time_limit_seconds(TrainConfig(time_limit=90)), time_limit_seconds(TrainConfig())
    (90.0, None)
    """
    limit = config.time_limit
    return float(limit) if isinstance(limit, (int, float)) and not isinstance(limit, bool) else None


def validate_train_config(config: TrainConfig) -> None:
    """Reject values that cannot work, naming the key and what would."""
    checks = [
        (config.epochs is None or config.epochs >= 1, "epochs must be >= 1"),
        (config.batch_size >= 1, "batch_size must be >= 1"),
        (config.devices >= 1, "devices must be >= 1"),
        (
            config.batch_size >= config.devices,
            "batch_size must be at least devices (each device takes a share of every batch)",
        ),
        (config.learning_rate > 0, "learning_rate must be > 0"),
        (0 < config.val_fraction < 1, "val_fraction must be between 0 and 1"),
        (config.optimizer in ("adam", "adamw"), "optimizer must be 'adam' or 'adamw'"),
        (config.schedule in ("cosine", "plateau"), "schedule must be 'cosine' or 'plateau'"),
        (config.channels in (None, 1, 3), "channels must be 1 or 3"),
        (config.height is None or config.height >= 8, "height must be >= 8"),
        (config.width is None or config.width >= 8, "width must be >= 8"),
        (config.patience >= 1, "patience must be >= 1"),
        (config.weight_decay >= 0, "weight_decay must be >= 0"),
        (config.warmup_epochs >= 0, "warmup_epochs must be >= 0"),
        (config.plateau_patience >= 1, "plateau_patience must be >= 1"),
        (0 < config.plateau_factor < 1, "plateau_factor must be between 0 and 1 (the cut)"),
        (
            config.time_limit in (None, TIME_LIMIT_AUTO, TIME_LIMIT_NONE)
            or (time_limit_seconds(config) or 0) > 0,
            "time_limit must be > 0 seconds, 'auto' or 'none'",
        ),
        (config.extend in (None, ADAPT_AUTO, ADAPT_NONE), "extend must be 'auto' or 'none'"),
        (config.shorten in (None, ADAPT_AUTO, ADAPT_NONE), "shorten must be 'auto' or 'none'"),
        (config.pretrain in (None, "synth"), "pretrain must be 'synth' or empty"),
        (
            config.pretrain_images >= 2,
            "pretrain_images must be >= 2 (a training and a validation captcha at least)",
        ),
        (config.pretrain_epochs >= 1, "pretrain_epochs must be >= 1"),
        (
            config.init in (None, INIT_AUTO, INIT_NONE) or config.pretrain is None,
            "init and pretrain don't mix: a run starts from another model or from a "
            "synthetic pre-training, not both",
        ),
        (0 <= config.augment.probability <= 1, "augment.probability must be between 0 and 1"),
        (0 <= config.min_accuracy <= 1, "min_accuracy must be between 0 and 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise CaptchaOCRError(f"bad config: {message}")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping (safe loader: data, never code)."""
    path = Path(path)
    if not path.is_file():
        raise CaptchaOCRError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise CaptchaOCRError(f"{path} is not valid YAML: {error}".splitlines()[0]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CaptchaOCRError(f"{path} must hold a YAML mapping of config keys")
    return data


def save_run_config(
    run_dir: Path, spec: ModelSpec, train: TrainConfig, data: dict[str, Any]
) -> None:
    """Write ``configs.yaml``: everything needed to rebuild, resume and read the run."""
    document = {
        "version": __version__,
        "model": to_dict(spec),
        "train": to_dict(train),
        "data": data,
    }
    write_text_atomic(
        run_dir / CONFIG_FILE, yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    )


def save_run_verdict(run_dir: Path, usable: bool, reason: str) -> None:
    """Add the run's verdict to its ``configs.yaml``: whether its best model is usable and
    why not (``export`` copies it into the ONNX metadata, readers warn about it)."""
    path = Path(run_dir) / CONFIG_FILE
    document = load_yaml(path)
    document["verdict"] = {"usable": usable, "reason": reason}
    write_text_atomic(path, yaml.safe_dump(document, sort_keys=False, allow_unicode=True))


def load_run_verdict(run_dir: str | Path) -> tuple[bool, str]:
    """``(usable, reason)`` from a run's ``configs.yaml``; a run without a verdict (still
    training, or made by an older version) counts as usable."""
    verdict = load_yaml(Path(run_dir) / CONFIG_FILE).get("verdict") or {}
    if not isinstance(verdict, dict):
        return True, ""
    return verdict.get("usable") is not False, str(verdict.get("reason") or "")


def load_run_config(run_dir: str | Path) -> tuple[ModelSpec, TrainConfig, dict[str, Any]]:
    """Read a run folder's ``configs.yaml`` back into typed settings."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise CaptchaOCRError(f"{run_dir} is not a run folder: {CONFIG_FILE} is missing")
    document = load_yaml(path)
    for section in ("model", "train"):
        if section not in document:
            raise CaptchaOCRError(f"{path} has no {section!r} section; was it edited by hand?")
    try:
        spec = from_dict(ModelSpec, document["model"], prefix="model.")
        train = from_dict(TrainConfig, document["train"], prefix="train.")
        validate_train_config(train)
        validate_model_spec(spec)
    except CaptchaOCRError as error:
        raise CaptchaOCRError(f"{path}: {error}; was it edited by hand?") from None
    return spec, train, document.get("data") or {}


def validate_model_spec(spec: ModelSpec, known_preset: bool = True) -> None:
    """Reject a model spec that no model of ours has (a hand-edited run folder or ONNX file).

    ``known_preset``: also require a preset this version can build (a run folder is rebuilt
    from its spec; an ONNX file is only read).
    """
    checks = [
        (not known_preset or spec.preset in PRESETS, f"unknown preset {spec.preset!r}"),
        (bool(spec.charset), "the charset is empty"),
        (len(set(spec.charset)) == len(spec.charset), "the charset repeats a character"),
        (spec.channels in (1, 3), "channels must be 1 or 3"),
        (min(spec.height, spec.width) >= 1, "height and width must be >= 1"),
        (spec.max_label_length >= 1, "max_label_length must be >= 1"),
        (
            0 <= spec.min_label_length <= spec.max_label_length,
            "min_label_length must be between 0 and max_label_length",
        ),
        (spec.blank_index == 0, "blank_index must be 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise CaptchaOCRError(f"bad model spec: {message}")


# ``export --int8`` keeps the int8 model only if its validation accuracy is at most this far
# below the float model's: 0.002 is 0.2 points, one image in 500.
INT8_MAX_ACCURACY_DROP = 0.002


# `captcha-ocr serve` reads each flag it is not given from this prefix + the flag's name in upper
# case (CAPTCHA_OCR_SERVE_MODEL, ..._MAX_BATCH): the settings of the container image.
SERVE_ENV_PREFIX = "CAPTCHA_OCR_SERVE_"


@dataclass(frozen=True)
class ServeSettings:
    """What one server worker does and accepts. The limits suit captchas (a few KB each).

    Here rather than in :mod:`captcha_ocr.serve` so that the CLI can show these defaults
    without the ``[serve]`` extra installed.
    """

    # ONNX Runtime threads per worker. None: 1, because ONNX Runtime's own default (one per
    # core, spin-waiting) starves the event loop: measured on 2 cores, a read then costs 1.6x
    # the CPU time. Use more workers to use more cores.
    threads: int | None = None
    batch_wait_ms: float = 2.0  # longest a request waits to share a model call; 0: no batching
    max_batch: int = 64  # most images in one model call
    max_image_bytes: int = 2_000_000  # encoded bytes of one image (after base64 decoding)
    max_images: int = 64  # images in one request
    max_pixels: int = 4_000_000  # width x height of one image, checked from its header
    max_body_bytes: int = 20_000_000  # whole request body (base64 adds a third to each image)

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be >= 1 (got {getattr(self, name)})"
            for name in (
                "max_batch",
                "max_image_bytes",
                "max_images",
                "max_pixels",
                "max_body_bytes",
            )
            if getattr(self, name) < 1
        ]
        if self.threads is not None and self.threads < 1:
            problems.append(f"threads must be >= 1 (got {self.threads})")
        if not self.batch_wait_ms >= 0:  # also refuses NaN
            problems.append(f"batch_wait_ms must be >= 0 (got {self.batch_wait_ms})")
        if problems:
            raise CaptchaOCRError("serve settings: " + "; ".join(problems))
