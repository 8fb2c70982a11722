"""Commands that make a model: ``train`` (then export) and ``export``.

Keras and TensorFlow are imported inside the commands, after the data and settings are
checked, so a mistake is reported in a second, not after the slow import.
"""

from __future__ import annotations

import argparse
import logging
import os

from captcha_ocr.cli.options import (
    PSEUDO_MIN_CONFIDENCE,
    SELF_TRAINING_ROUNDS,
    add_command,
    add_input_size_options,
    add_label_options,
    image_paths,
    min_confidence_flag,
)
from captcha_ocr.config import (
    ADAPT_AUTO,
    ADAPT_NONE,
    INIT_AUTO,
    INIT_NONE,
    INT8_MAX_ACCURACY_DROP,
    TIME_LIMIT_AUTO,
    TIME_LIMIT_NONE,
    TrainConfig,
)
from captcha_ocr.epochs import (
    AUTO_EPOCHS,
    AUTO_SECONDS_PER_IMAGE,
    AUTO_STEPS_RANGE,
    AUTO_TIME_LIMIT_S,
    FINE_TUNE_EPOCHS,
    FINE_TUNE_MAX_STEPS,
    FINE_TUNE_MIN_STEPS,
    SATURATED_CER,
    SATURATED_EPOCHS,
    SATURATED_MIN_IMAGES,
)
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.presets import FINE_TUNE
from captcha_ocr.runfolder import INT8_ONNX_FILE, ONNX_FILE, SUSPECTS_CSV

DEFAULT_RUNS_DIR = "runs"


def _time_limit(text: str) -> float | str:
    """``--time-limit``: seconds, ``auto`` or ``none`` (the config checks the number)."""
    if text.strip().lower() in (TIME_LIMIT_AUTO, TIME_LIMIT_NONE):
        return text.strip().lower()
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds, {TIME_LIMIT_AUTO!r} or {TIME_LIMIT_NONE!r}"
        ) from None


# train's exit status when the run did not learn (its best model reads fewer validation
# captchas than --min-accuracy): the run folder and its ONNX file are kept, marked not usable.
NOT_LEARNED_STATUS = 3

# What --resume can change in a run; every other train flag would be silently ignored.
RESUME_FLAGS = ("resume", "epochs", "devices", "quiet", "no_suspects")

# The train flags that override a TrainConfig field of the same name.
CONFIG_FLAGS = (
    "preset",
    "epochs",
    "batch_size",
    "seed",
    "height",
    "width",
    "channels",
    "patience",
    "label_pattern",
    "val_fraction",
    "time_limit",
    "extend",
    "shorten",
    "pretrain",
    "init",
    "pretrain_images",
    "pretrain_epochs",
    "devices",
    "min_accuracy",
)

_INT8_POINTS = f"{100 * INT8_MAX_ACCURACY_DROP:g} points"  # of validation accuracy

DEFAULTS = TrainConfig()  # the defaults that help texts quote
log = logging.getLogger("captcha_ocr")


def add_train(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "train", "train a reader on labeled images, then export it to ONNX", cmd_train
    )
    p.add_argument(
        "data", metavar="DATA", nargs="?", help="folder of labeled images, or a path,label CSV"
    )
    p.add_argument("--out", help=f"where run folders are made (default {DEFAULT_RUNS_DIR})")
    p.add_argument("--preset", help="network: default, reference or tiny (default: default)")
    p.add_argument(
        "--epochs",
        type=int,
        help=f"epoch budget (default: about {AUTO_EPOCHS} epochs, {AUTO_STEPS_RANGE[0]:,} to "
        f"{AUTO_STEPS_RANGE[1]:,} optimizer steps, from random weights; about "
        f"{FINE_TUNE_EPOCHS} epochs, {FINE_TUNE_MIN_STEPS:,} to {FINE_TUNE_MAX_STEPS:,} steps, "
        "from a trained model, as the base model)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        help=f"images per optimizer step, all devices together (default {DEFAULTS.batch_size}, "
        f"{FINE_TUNE['batch_size']} from a trained model such as the base model)",
    )
    p.add_argument(
        "--lr",
        type=float,
        help=f"peak learning rate (default {DEFAULTS.learning_rate:g}, "
        f"{FINE_TUNE['learning_rate']:g} from a trained model)",
    )
    p.add_argument("--seed", type=int, help="seed for the split, augmentation and weights")
    add_input_size_options(p)
    p.add_argument(
        "--channels", type=int, choices=(1, 3), help="1 = grey, 3 = RGB (default: preset's)"
    )
    p.add_argument("--patience", type=int, help="early stopping patience in epochs")
    p.add_argument("--val-fraction", type=float, help="share held out for validation (default 0.1)")
    p.add_argument(
        "--time-limit",
        type=_time_limit,
        metavar="SECONDS|auto|none",
        help="seconds of training at most: once two epochs are timed the epoch budget and its "
        "learning-rate schedule shrink to end in time (default auto: with the automatic "
        f"budget {AUTO_SECONDS_PER_IMAGE:g} s a training image, at least "
        f"{AUTO_TIME_LIMIT_S / 60:g} minutes; with --epochs none)",
    )
    p.add_argument(
        "--extend",
        choices=(ADAPT_AUTO, ADAPT_NONE),
        help="a budget that ends while the validation CER still falls by a fifth or more over "
        "its last quarter grows by half, once, within the time limit (default auto: with the "
        "automatic budget; with --epochs none)",
    )
    p.add_argument(
        "--shorten",
        choices=(ADAPT_AUTO, ADAPT_NONE),
        help=f"a run that reads its {SATURATED_MIN_IMAGES} or more validation images nearly all "
        f"right (CER <= {SATURATED_CER:g}) and has read no more for {SATURATED_EPOCHS} epochs ends "
        f"{SATURATED_EPOCHS} epochs later, its learning-rate schedule compressed into them "
        "(default auto: with the automatic budget; with --epochs none)",
    )
    p.add_argument(
        "--pretrain",
        choices=("synth",),
        help="first train on generated captchas that imitate the data, then fine-tune",
    )
    p.add_argument(
        "--init",
        metavar="RUN_DIR|base|none",
        help="start from a trained run's weights (its network, fitted to this data's input "
        "size; characters it does not know start fresh): fine-tune it on new labels or a new "
        "style. base: the "
        "base model shipped in the package; none: random weights (default: base for the "
        "default network unless --pretrain, else none)",
    )
    p.add_argument(
        "--pretrain-images", type=int, help="synthetic captchas to pre-train on (default 4000)"
    )
    p.add_argument("--pretrain-epochs", type=int, help="pre-training epochs (default 15)")
    p.add_argument(
        "--devices",
        type=int,
        help="train data-parallel on this many GPUs (tf.distribute.MirroredStrategy); "
        "on a machine without GPUs, on that many logical CPU devices (default 1)",
    )
    p.add_argument(
        "--min-accuracy",
        type=float,
        help="a run whose best model reads fewer validation captchas than this share did not "
        f"learn: exit status {NOT_LEARNED_STATUS}, model marked not usable (default 0.5)",
    )
    p.add_argument(
        "--no-rescue",
        action="store_true",
        help="a run stuck on the CTC blank plateau only warns (default: it starts once more "
        "with --pretrain synth, or with another seed when it started from a trained model, "
        "keeping the first attempt in RUN_DIR/stuck-attempt)",
    )
    p.add_argument("--config", help="YAML file of training settings (flags override it)")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted run with its own settings (only --epochs, a new epoch "
        "budget, and --devices can change)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print what the run would do with this data (input size, time steps, start, "
        "epoch budget, recipe) and stop before training",
    )
    p.add_argument(
        "--no-suspects",
        action="store_true",
        help="do not read the run's own images after training (default: the images the model "
        f"reads otherwise than labeled go to RUN_DIR/{SUSPECTS_CSV}, to find wrong labels, "
        "and the log says how well it reads each part, with a hint when more labels would "
        "help most)",
    )
    p.add_argument(
        "--unlabeled",
        action="append",
        metavar="SOURCE",
        help="images nobody labeled (a folder, recursively, or a file; repeat the flag for "
        "more): after training, the run reads them and a new run trains on the labels and its "
        "surest reads, --rounds times (self-training; each round is a full training). Every "
        "round validates on the first run's validation images; latest ends on the best",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=SELF_TRAINING_ROUNDS,
        help="self-training rounds after the first training, with --unlabeled "
        "(default %(default)s)",
    )
    p.add_argument(
        "--pseudo-min-confidence",
        default=PSEUDO_MIN_CONFIDENCE,
        metavar="P|recommended",
        help="with --unlabeled: the confidence a read needs to become a label "
        "(default %(default)s, as captcha-ocr pseudo-label)",
    )
    add_label_options(p)
    p.add_argument(
        "--strict", action="store_true", help="unreadable images are an error, not a skip"
    )
    # Every train option's value when not given, so --resume can tell which ones were.
    p.set_defaults(train_defaults=vars(p.parse_args([])))


def cmd_train(args: argparse.Namespace) -> int:
    from captcha_ocr.config import load_yaml, resolve_train_config

    if args.resume is None and args.data is None:
        raise CaptchaOCRError(
            "give DATA (a folder of labeled images or a CSV), or --resume RUN_DIR"
        )
    samples = config = None
    if args.resume is not None and args.dry_run:
        raise CaptchaOCRError("--dry-run plans a new run; a resumed run keeps its own plan")
    if args.resume is not None:
        others = {k: v for k, v in args.train_defaults.items() if k not in RESUME_FLAGS}
        refused = _flags_given(args, others)
        if refused:
            raise CaptchaOCRError(
                f"--resume continues a run with its own data and settings; {', '.join(refused)} "
                "cannot change them (only --epochs and --devices can): drop "
                f"{'it' if len(refused) == 1 else 'them'}, or train a new run"
            )
    else:
        # Check the data and config before the (slow) TensorFlow import; the samples found
        # go to training, so the folder is scanned (and its warnings printed) once.
        from captcha_ocr.data import find_samples

        file_overrides = load_yaml(args.config) if args.config else {}
        preset = "default"
        if args.init not in (None, INIT_AUTO, INIT_NONE):  # its network, unless --preset
            # or the config file names one
            from captcha_ocr.warmstart import init_spec

            preset = init_spec(args.init).preset
        config = resolve_train_config(preset, file_overrides, _train_overrides(args))
        samples = find_samples(args.data, config.label_pattern, config.ignore_case)
    unlabeled, pseudo_min_confidence = _self_training_flags(args, samples or [])
    log.info("loading TensorFlow ...")
    if args.dry_run:
        from captcha_ocr.train import plan

        for key, value in plan(args.data, config, samples).items():
            print(f"{key}: {value}")
        if unlabeled:
            print(
                f"self-training: {args.rounds} more round(s), each a full training on the "
                f"labels and the reads of {len(unlabeled):,} unlabeled image(s) with "
                f"confidence >= {pseudo_min_confidence}"
            )
        return 0
    from captcha_ocr.export import export_run
    from captcha_ocr.train import train

    result = train(
        args.data,
        args.out or DEFAULT_RUNS_DIR,
        config,
        resume=args.resume,
        progress=not args.quiet,
        resume_epochs=args.epochs if args.resume else None,
        resume_devices=args.devices if args.resume else None,
        samples=samples,
    )
    log.info("exporting the best model (epoch %d) to ONNX ...", result.state.best_epoch)
    onnx_path = export_run(result.run_dir)
    if unlabeled and not result.not_usable and not result.state.interrupted:
        from captcha_ocr.self_training import best_round, format_rounds, self_train

        rounds = self_train(
            result, unlabeled, args.out or DEFAULT_RUNS_DIR, config, args.rounds,
            pseudo_min_confidence, progress=not args.quiet,
        )  # fmt: skip
        print(format_rounds(rounds))
        result = best_round(rounds).result
        onnx_path = result.run_dir / ONNX_FILE
    elif unlabeled:
        why = "was interrupted" if result.state.interrupted else "did not learn"
        log.warning("no self-training round: the first run %s", why)
    if not args.no_suspects:
        from captcha_ocr.suspects import check_run_labels

        check_run_labels(result.run_dir)
    best = result.best
    print(
        f"run folder: {result.run_dir}\n"
        f"best epoch {result.state.best_epoch}: validation CER {best.get('val_cer', float('nan')):.4f}, "
        f"accuracy {1 - best.get('val_wer', float('nan')):.1%}\n"
        f"model: {onnx_path}"
    )
    if result.not_usable:
        log.error(
            "error: the run did not learn: %s. The model is kept but marked not usable. "
            "What to try: check that the labels match the images (captcha-ocr inspect DATA, "
            "--label-pattern); label more images; --init base (if you gave --init none) or "
            "--pretrain synth; a longer budget (--epochs); "
            "see the README's 'When training does not learn'.",
            result.not_usable,
        )
        return NOT_LEARNED_STATUS
    return 0


def _self_training_flags(args: argparse.Namespace, samples: list) -> tuple[list[str], float | str]:
    """The images of --unlabeled (found before the slow TensorFlow import; some not among the
    labeled ``samples``) and the checked --pseudo-min-confidence; no images without
    --unlabeled."""
    if not args.unlabeled:
        given = [flag for flag, value, default in (
            ("--rounds", args.rounds, SELF_TRAINING_ROUNDS),
            ("--pseudo-min-confidence", args.pseudo_min_confidence, PSEUDO_MIN_CONFIDENCE),
        ) if value != default]  # fmt: skip
        if given:
            raise CaptchaOCRError(
                f"{' and '.join(given)} only apply with --unlabeled FOLDER (self-training)"
            )
        return [], 0.0
    if args.rounds < 1:
        raise CaptchaOCRError(f"--rounds {args.rounds}: give 1 or more self-training rounds")
    threshold = min_confidence_flag(args.pseudo_min_confidence, "--pseudo-min-confidence")
    images = image_paths(args.unlabeled)
    labeled = {os.path.realpath(s.path) for s in samples}
    if all(os.path.realpath(path) in labeled for path in images):
        raise CaptchaOCRError(
            f"every image of --unlabeled ({len(images):,}) is labeled in DATA already: give "
            "the images nobody labeled"
        )
    return images, threshold


def _train_overrides(args: argparse.Namespace) -> dict:
    """The TrainConfig fields the train flags set (None: not given, the file or preset decides)."""
    overrides = {key: getattr(args, key) for key in CONFIG_FLAGS}
    overrides["learning_rate"] = args.lr
    if args.ignore_case:
        overrides["ignore_case"] = True
    if args.strict:
        overrides["strict"] = True
    if args.no_rescue:
        overrides["rescue"] = False
    return overrides


def _flags_given(args: argparse.Namespace, parser_defaults: dict) -> list[str]:
    """The train flags (and DATA) given on the command line, as the user wrote them."""
    given = [key for key, default in parser_defaults.items() if getattr(args, key) != default]
    return ["DATA" if key == "data" else "--" + key.replace("_", "-") for key in given]


def add_export(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "export",
        f"export a run's best model to RUN_DIR/{ONNX_FILE} (checks parity)",
        cmd_export,
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument(
        "--int8",
        action="store_true",
        help=f"also write {INT8_ONNX_FILE}, kept only if its validation accuracy is within "
        f"{_INT8_POINTS} of the float model",
    )


def cmd_export(args: argparse.Namespace) -> int:
    log.info("loading TensorFlow ...")
    from captcha_ocr.export import export_run

    print(export_run(args.run_dir))
    if args.int8:
        from captcha_ocr.export import export_int8

        path, float_accuracy, int8_accuracy = export_int8(args.run_dir)
        print(
            f"validation accuracy: float {float_accuracy:.2%}, int8 {int8_accuracy:.2%}: "
            + (f"kept {path}" if path else f"int8 model rejected (more than {_INT8_POINTS} lost)")
        )
    return 0
