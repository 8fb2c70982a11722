"""Training: data -> a run folder with the best checkpoint, history, curves and TensorBoard logs.

This module starts, resumes and finishes a run; the pieces live beside it:

* :mod:`captcha_ocr.runfolder` the files of a run (names, state, history, curves);
* :mod:`captcha_ocr.fit` the training loop (CTC loss, input feed, per-epoch bookkeeping);
* :mod:`captcha_ocr.epochs` the epoch budget and the verdict after each epoch;
* :mod:`captcha_ocr.devices` data-parallel training on several devices;
* :mod:`captcha_ocr.synth` synthetic captchas and ``--pretrain synth``.

Export the result with :func:`captcha_ocr.export.export_run`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from captcha_ocr.basemodel import BASE_NAME
from captcha_ocr.charset import Charset
from captcha_ocr.config import (
    ADAPT_AUTO,
    ADAPT_NONE,
    TIME_LIMIT_AUTO,
    TIME_LIMIT_NONE,
    ModelSpec,
    TrainConfig,
    load_run_config,
    resolve_train_config,
    save_run_config,
    save_run_verdict,
    time_limit_seconds,
    validate_train_config,
)
from captcha_ocr.data import (
    Sample,
    check_labels_readable,
    find_samples,
    model_input_size,
    most_common_size,
    read_labels_file,
    split_as_marked,
    split_samples,
    write_samples_csv,
)
from captcha_ocr.devices import distribution_strategy
from captcha_ocr.epochs import auto_epochs, auto_time_limit, batches_per_epoch, epoch_budget
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.fit import TrainResult, fit
from captcha_ocr.model import build_model, time_steps
from captcha_ocr.plateau import exact_accuracy
from captcha_ocr.runfolder import (
    BEST_MODEL,
    CURVES_FILE,
    HISTORY_FILE,
    LAST_MODEL,
    LOGS_DIR,
    STATE_FILE,
    STUCK_ATTEMPT_DIR,
    TRAIN_CSV,
    VAL_CSV,
    RunState,
    check_writable,
    new_run_dir,
    point_latest,
    read_history,
)
from captcha_ocr.synth import pretrain_on_synth
from captcha_ocr.warmstart import init_spec, resolve_init
from captcha_ocr.warmstart import initial_weights as warm_start

log = logging.getLogger(__name__)


def measure_spec(
    samples: list[Sample], config: TrainConfig, init: ModelSpec | None = None
) -> ModelSpec:
    """Charset, input size and channels from the data and the config; starting from another
    model (``init``), its channels unless set. The input size is the data's either way (the
    weights of another height are resampled to fit: see ``warmstart``)."""
    charset = Charset.from_labels(s.label for s in samples)
    width, height = config.width, config.height
    if width is None or height is None:  # else no need to read any image header
        width, height = model_input_size(most_common_size(samples), width, height, config.preset)
    channels = config.channels or (init.channels if init is not None else 1)
    return ModelSpec(
        preset=config.preset,
        charset=charset.chars,
        height=int(height),
        width=int(width),
        channels=channels,
        max_label_length=max(len(s.label) for s in samples),
        min_label_length=min(len(s.label) for s in samples),
    )


def check_labels_fit(samples: list[Sample], steps: int, spec: ModelSpec) -> None:
    """Every label must fit in the model's CTC time steps and be non-empty; say which one
    does not."""
    check_labels_readable(
        Charset(spec.charset),
        samples,
        steps,
        model=f"preset {spec.preset!r} at width {spec.width}",
        hint="use a larger --width or a shorter label",
    )
    empty = [s for s in samples if not s.label]
    if empty:
        raise CaptchaOCRError(f"{len(empty)} image(s) have an empty label, e.g. {empty[0].path}")


def warn_about_spaces(samples: list[Sample]) -> None:
    """Spaces in labels are allowed, but most often come from copies a file manager named
    (``2b827 (1).png``, ``2b827 - Copy.png``): say so before the model learns ' ' and '('."""
    spaced = [s for s in samples if any(c.isspace() for c in s.label)]
    if spaced:
        log.warning(
            "%d label(s) contain spaces, e.g. %r (%s): the model will learn to read spaces; "
            "if these are copies like 'name (1).png', rename them or set --label-pattern",
            len(spaced),
            spaced[0].label,
            Path(spaced[0].path).name,
        )


@dataclasses.dataclass
class _Run:
    """A run to train: its settings, split, folder and where it stands."""

    spec: ModelSpec
    config: TrainConfig
    train_samples: list[Sample]
    val_samples: list[Sample]
    data_info: dict
    run_dir: Path | None = None  # None until a new run's folder is made
    state: RunState = dataclasses.field(default_factory=RunState)
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    fine_tuning_started: bool = False  # False: pre-train first (if asked), then fit from scratch


def train(
    data: str | Path | None,
    out: str | Path = "runs",
    config: TrainConfig | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
    resume_epochs: int | None = None,
    resume_devices: int | None = None,
    samples: list[Sample] | None = None,
) -> TrainResult:
    """Train a reader; returns when the budget, early stopping, the time limit or Ctrl-C ends it.

    ``data`` is a folder of labeled images or a ``path,label`` CSV (``samples``: the samples
    already found in it, so it is not scanned twice). With ``resume`` (a run folder), training
    continues where it stopped, with the run's own config and split; ``resume_epochs`` raises
    (or lowers) its epoch budget, ``resume_devices`` changes the number of devices it trains
    on, and nothing else can change. A run whose ``--pretrain synth`` was interrupted resumes
    its pre-training, then fine-tunes. Ctrl-C during pre-training raises
    ``KeyboardInterrupt`` (there is no reader yet); during fine-tuning it returns the run as
    it stands, its best checkpoint kept. ``config`` is taken as it is; the default (None) and
    :func:`~captcha_ocr.config.resolve_train_config` layer the preset's recipes as ``train``
    on the command line does (a run from the base model fine-tunes with ``presets.FINE_TUNE``).

    >>> config = resolve_train_config(cli_overrides={"epochs": 50})
    >>> result = train("data/captchas", "runs", config)  # doctest: +SKIP
    >>> result.state.best_cer                                             # doctest: +SKIP
    0.004
    """
    if resume is not None:
        if data is not None or config is not None or samples is not None:
            raise CaptchaOCRError(
                "a resumed run keeps its own data and config: give only the run folder "
                "(and, if you like, a new epoch budget or device count)"
            )
        run = _resumed_run(Path(resume), resume_epochs, resume_devices)
        strategy = distribution_strategy(run.config.devices)  # before TensorFlow starts devices
    else:
        if data is None:
            raise CaptchaOCRError("give a data folder or labels file to train on")
        run = _planned_run(data, config or resolve_train_config(), samples)
        strategy = distribution_strategy(run.config.devices)  # before TensorFlow starts devices
        check_labels_fit(
            [*run.train_samples, *run.val_samples], time_steps(build_model(run.spec)), run.spec
        )
        _make_run_folder(run, Path(out))
    assert run.run_dir is not None
    initial_weights = None
    if run.config.init and not run.fine_tuning_started:
        initial_weights = warm_start(run.config.init, run.spec)
    if run.config.pretrain == "synth" and not run.fine_tuning_started:
        try:
            initial_weights = pretrain_on_synth(
                run.train_samples, run.spec, run.config, run.run_dir, progress, strategy
            )
        except KeyboardInterrupt:
            log.warning(
                "interrupted during pre-training; go on with: captcha-ocr train --resume %s",
                run.run_dir,
            )
            raise
    result = fit(
        run.run_dir,
        run.spec,
        run.config,
        run.train_samples,
        run.val_samples,
        run.state,
        run.history,
        progress,
        resume=run.fine_tuning_started,
        initial_weights=initial_weights,
        strategy=strategy,
    )
    if result.state.stuck and run.config.rescue and not result.state.interrupted:
        result = _rescue(run, result, progress, strategy)
    if not (run.run_dir / BEST_MODEL).is_file():
        again = ""
        if run.config.pretrain == "synth":  # the pre-training is kept: resuming reuses it
            again = f" but its pre-training; go on with: captcha-ocr train --resume {run.run_dir}"
        raise CaptchaOCRError(
            f"training stopped before the first epoch ended; nothing to keep in {run.run_dir}"
            + again
        )
    if not result.state.interrupted:
        _judge(result)
    return result


def plan(
    data: str | Path, config: TrainConfig | None = None, samples: list[Sample] | None = None
) -> dict[str, str]:
    """What :func:`train` would do with ``data`` and ``config`` (None: the defaults), without
    training: each setting that adapts to the data, worded for people (``train --dry-run``).

    >>> plan("data/captchas")["time steps"]  # doctest: +SKIP
    '50 (one per 4 px)'
    """
    run = _planned_run(data, config or resolve_train_config(), samples)
    spec, config = run.spec, run.config
    steps = time_steps(build_model(spec))
    if config.pretrain:
        start = (
            f"pre-training on {config.pretrain_images} synthetic captchas "
            f"({config.pretrain_epochs} epochs), then these images"
        )
    else:
        start = {None: "random weights", BASE_NAME: "the base model"}.get(
            config.init, f"the weights of {config.init}"
        )
    limit = time_limit_seconds(config)
    batches = batches_per_epoch(len(run.train_samples), config.batch_size)
    return {
        "images": f"{len(run.train_samples)} training, {len(run.val_samples)} validation",
        "charset": f"{spec.charset!r} ({len(spec.charset)})",
        "label lengths": f"{spec.min_label_length} to {spec.max_label_length}",
        "data size": str(most_common_size(run.train_samples + run.val_samples)),
        "model input": f"{spec.input_size}, {spec.channels} channel(s)",
        "time steps": f"{steps} (one per {spec.width / steps:.3g} px)",
        "start": start,
        "epochs": f"{config.epochs} ({config.epochs * batches} optimizer steps)",
        "time limit": f"{limit:g} s" if limit else "none",
        "budget": f"extend {config.extend or ADAPT_NONE}, shorten {config.shorten or ADAPT_NONE}",
        "batch size": str(config.batch_size),
        "learning rate": f"{config.learning_rate:g} peak, {config.schedule} schedule",
        "augmented": f"{config.augment.probability:.0%} of training images",
    }


def _rescue(run: _Run, stuck: TrainResult, progress: bool, strategy) -> TrainResult:
    """Train a stuck run once more with the remedy measured to help on the blank plateau:
    ``--pretrain synth`` (another seed if it had pre-trained, or started from ``--init``). The stuck attempt's
    files move to ``stuck-attempt/``; ``configs.yaml`` then holds the second attempt's config,
    so ``--resume`` goes on with it."""
    assert run.run_dir is not None
    folder = run.run_dir / STUCK_ATTEMPT_DIR
    folder.mkdir(exist_ok=True)
    for name in (BEST_MODEL, LAST_MODEL, STATE_FILE, HISTORY_FILE, CURVES_FILE, LOGS_DIR):
        if (run.run_dir / name).exists():
            os.replace(run.run_dir / name, folder / name)
    remedy: dict = {"rescue": False}
    if run.config.pretrain == "synth" or run.config.init:
        remedy["seed"] = run.config.seed + 1
    else:
        remedy["pretrain"] = "synth"
    config = dataclasses.replace(run.config, **remedy)
    log.warning(
        "stuck on the CTC blank plateau after %d epochs: starting once more with %s "
        "(the first attempt is kept in %s; --no-rescue turns this off)",
        stuck.state.epochs_done,
        ", ".join(f"{k}={v}" for k, v in remedy.items() if k != "rescue"),
        folder,
    )
    save_run_config(run.run_dir, run.spec, config, {**run.data_info, "rescued": True})
    if config.init:
        weights = warm_start(config.init, run.spec)
    else:
        weights = pretrain_on_synth(
            run.train_samples, run.spec, config, run.run_dir, progress, strategy
        )
    return fit(
        run.run_dir, run.spec, config, run.train_samples, run.val_samples, RunState(), [],
        progress, initial_weights=weights, strategy=strategy,
    )  # fmt: skip


def _judge(result: TrainResult) -> None:
    """A run whose best model reads fewer validation captchas than ``min_accuracy`` did not
    learn: say why in the result and in ``configs.yaml`` (export marks its ONNX file)."""
    accuracy = exact_accuracy(result.best) if result.best else 0.0
    floor = result.config.min_accuracy
    if accuracy >= floor:
        save_run_verdict(result.run_dir, True, "")
        return
    result.not_usable = (
        f"its best epoch reads {accuracy:.1%} of the validation captchas, under the "
        f"{floor:.0%} floor (min_accuracy)"
    )
    save_run_verdict(result.run_dir, False, result.not_usable)


def _planned_run(data: str | Path, config: TrainConfig, samples: list[Sample] | None) -> _Run:
    """A new run's settings and split; its folder is made once its labels are checked."""
    validate_train_config(config)
    config = resolve_init(config)  # the run's configs.yaml says where it really started
    if samples is None:
        samples = find_samples(data, config.label_pattern, config.ignore_case)
    log.info("found %d labeled images in %s", len(samples), data)
    warn_about_spaces(samples)
    spec = measure_spec(samples, config, init_spec(config.init) if config.init else None)
    marked = split_as_marked(samples, data)
    if marked:
        log.info(
            "validation: the %d images the labels file marks part=val (not --val-fraction)",
            len(marked[1]),
        )
    train_samples, val_samples = marked or split_samples(samples, config.val_fraction, config.seed)
    if config.epochs is None:
        config = dataclasses.replace(
            config,
            epochs=auto_epochs(len(train_samples), config.batch_size, config.init is not None),
        )
        if config.time_limit == TIME_LIMIT_AUTO:
            config = dataclasses.replace(config, time_limit=auto_time_limit(len(train_samples)))
        limit = time_limit_seconds(config)
        log.info(
            "epoch budget: %d (%d optimizer steps)%s",
            config.epochs,
            config.epochs * batches_per_epoch(len(train_samples), config.batch_size),
            f", fitted to end within {limit:g} s (--time-limit)" if limit else "",
        )
    else:  # the user's own budget: no time bound unless one is given, kept as given
        if config.time_limit == TIME_LIMIT_AUTO:
            config = dataclasses.replace(config, time_limit=TIME_LIMIT_NONE)
        for key in ("extend", "shorten"):
            if getattr(config, key) == ADAPT_AUTO:
                config = dataclasses.replace(config, **{key: ADAPT_NONE})
    # absolute: what a run says it trained on holds from any working folder (pseudo_labels
    # finds its pseudo-label marks there)
    data_info = {"source": os.path.abspath(data), "count": len(samples)}
    return _Run(spec, config, train_samples, val_samples, data_info)


def _make_run_folder(run: _Run, out: Path) -> None:
    """Make the run's folder under ``out`` with its config and split; point ``latest`` at it."""
    check_writable(out)
    run.run_dir = new_run_dir(out)
    check_writable(run.run_dir)
    save_run_config(run.run_dir, run.spec, run.config, run.data_info)
    write_samples_csv(run.run_dir / TRAIN_CSV, run.train_samples)
    write_samples_csv(run.run_dir / VAL_CSV, run.val_samples)
    point_latest(run.run_dir)


def _resumed_run(run_dir: Path, epochs: int | None, devices: int | None) -> _Run:
    """An interrupted run, as it stood after its last complete epoch.

    A ``--pretrain synth`` run interrupted before fine-tuning finished an epoch has no
    ``last.keras``: it starts over from its pre-training (which goes on where it stopped, or
    is skipped when it had ended), then fine-tunes from scratch.
    """
    spec, config, data_info = load_run_config(run_dir)
    changes = {k: v for k, v in (("epochs", epochs), ("devices", devices)) if v is not None}
    if epochs is not None:  # the user's own budget: no time bound, kept as given (as when new)
        changes.update(time_limit=TIME_LIMIT_NONE, extend=ADAPT_NONE, shorten=ADAPT_NONE)
    if changes:
        config = dataclasses.replace(config, **changes)
        validate_train_config(config)
    # A run that starts from --pretrain synth or --init has nothing to go on from before its
    # first epoch ends: it starts that way again.
    started = (config.pretrain is None and config.init is None) or (run_dir / LAST_MODEL).is_file()
    for name in (TRAIN_CSV, VAL_CSV, LAST_MODEL) if started else (TRAIN_CSV, VAL_CSV):
        if not (run_dir / name).is_file():
            raise CaptchaOCRError(f"cannot resume {run_dir}: {name} is missing")
    run = _Run(
        spec,
        config,
        read_labels_file(run_dir / TRAIN_CSV),
        read_labels_file(run_dir / VAL_CSV),
        data_info,
        run_dir,
        fine_tuning_started=started,
    )
    if started:
        run.state = RunState.load(run_dir)
        run.history = read_history(run_dir / HISTORY_FILE)[: run.state.epochs_done]
        run.state.stop_reason = ""
        if epochs is not None:
            run.state.epochs_fitted = run.state.epochs_extended = run.state.saturated_at = 0
        if run.state.epochs_done >= epoch_budget(run.state, config):
            raise CaptchaOCRError(
                f"{run_dir} already ran its {epoch_budget(run.state, config)} epochs; nothing "
                "to resume (--epochs N raises the budget)"
            )
    if changes:  # only once sure to go on
        save_run_config(run_dir, spec, config, data_info)
    if started:
        log.info("resuming %s from epoch %d", run_dir, run.state.epochs_done + 1)
    else:
        log.info("resuming %s: pre-training, then fine-tuning", run_dir)
    return run
