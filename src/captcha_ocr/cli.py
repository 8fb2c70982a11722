"""The ``captcha-ocr`` command: a thin layer over the library, one function per command.

Errors the user can fix print one line (``error: ...``) and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from captcha_ocr import __version__
from captcha_ocr.charset import DEFAULT_CHARSET
from captcha_ocr.config import INT8_MAX_ACCURACY_DROP, ServeSettings
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.presets import PRESETS, get_preset
from captcha_ocr.runfolder import INT8_ONNX_FILE, ONNX_FILE
from captcha_ocr.sizes import ImageSize

DEFAULT_RUNS_DIR = "runs"

log = logging.getLogger("captcha_ocr")

_INT8_POINTS = f"{100 * INT8_MAX_ACCURACY_DROP:g} points"  # of validation accuracy


class _TqdmHandler(logging.StreamHandler):
    """Log lines that do not break a progress bar in the same terminal."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging must never crash the program
            self.handleError(record)


def _setup_logging(verbose: bool) -> None:
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("captcha_ocr")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


def _image_paths(items: Sequence[str]) -> list[str]:
    from captcha_ocr.data import image_files

    paths: list[str] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = [str(p) for p in image_files(path)]
            if not found:
                raise CaptchaOCRError(f"no images found in folder {path}")
            paths.extend(found)
        elif path.is_file():
            paths.append(str(path))
        else:
            raise CaptchaOCRError(f"{path} does not exist")
    return paths


# --- commands -------------------------------------------------------------------------------


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


def cmd_download(args: argparse.Namespace) -> int:
    from captcha_ocr.download import download

    folder = download(args.url, args.to, args.sha256)
    log.info("dataset ready in %s", folder)
    return 0


def _train_overrides(args: argparse.Namespace) -> dict:
    keys = (
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
        "pretrain",
        "pretrain_images",
        "pretrain_epochs",
        "devices",
    )
    overrides = {key: getattr(args, key) for key in keys}
    overrides["learning_rate"] = args.lr
    if args.ignore_case:
        overrides["ignore_case"] = True
    if args.strict:
        overrides["strict"] = True
    return overrides


def _input_size(report) -> ImageSize:
    """The size the model would be built for (``report.input_size``); an error when no
    image could be read to measure it."""
    if report.input_size is None:
        raise CaptchaOCRError(f"none of the images in {report.source} could be read")
    return report.input_size


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


# What --resume can change in a run; every other train flag would be silently ignored.
RESUME_FLAGS = ("resume", "epochs", "devices", "quiet")


def _flags_given(args: argparse.Namespace, parser_defaults: dict) -> list[str]:
    """The train flags (and DATA) given on the command line, as the user wrote them."""
    given = [key for key, default in parser_defaults.items() if getattr(args, key) != default]
    return ["DATA" if key == "data" else "--" + key.replace("_", "-") for key in given]


def cmd_train(args: argparse.Namespace) -> int:
    from captcha_ocr.config import load_yaml, resolve_train_config

    if args.resume is None and args.data is None:
        raise CaptchaOCRError(
            "give DATA (a folder of labeled images or a CSV), or --resume RUN_DIR"
        )
    samples = config = None
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
        config = resolve_train_config("default", file_overrides, _train_overrides(args))
        samples = find_samples(args.data, config.label_pattern, config.ignore_case)
    log.info("loading TensorFlow ...")
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
    best = result.best
    print(
        f"run folder: {result.run_dir}\n"
        f"best epoch {result.state.best_epoch}: validation CER {best.get('val_cer', float('nan')):.4f}, "
        f"accuracy {1 - best.get('val_wer', float('nan')):.1%}\n"
        f"model: {onnx_path}"
    )
    return 0


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


def cmd_predict(args: argparse.Namespace) -> int:
    from captcha_ocr.infer import Reader

    reader = Reader.load(args.model, threads=args.threads)
    paths = _image_paths(args.images)
    predictions = reader.read_batch(
        paths,
        batch_size=args.batch_size,
        beam_width=args.beam_width,
        allowed_chars=args.allowed_chars,
        skip_errors=True,
        progress=len(paths) > 200 and not args.json,
    )
    errors = [p.error for p in predictions if p.error is not None]
    if errors and len(errors) == len(paths):
        what = errors[0]
        if len(paths) > 1:
            what = f"none of the {len(paths)} images could be read, e.g. {what}"
        raise CaptchaOCRError(
            f"{what}; check that the files are images (PNG, JPEG, ...) and not damaged"
        )
    failed = 0
    for path, prediction in zip(paths, predictions):
        if prediction.error is not None:
            failed += 1
            log.warning("skipped %s", prediction.error)
            if args.json:
                print(
                    json.dumps(
                        {"path": path, "text": None, "confidence": 0.0, "error": prediction.error}
                    )
                )
            continue
        if args.json:
            print(
                json.dumps(
                    {
                        "path": path,
                        "text": prediction.text,
                        "confidence": round(prediction.confidence, 6),
                    },
                    ensure_ascii=False,
                )
            )
        else:
            print(f"{path}\t{prediction.text}\t{prediction.confidence:.4f}")
    if failed:
        log.warning("%d of %d image(s) could not be read", failed, len(paths))
    return 1 if failed else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from captcha_ocr.data import find_samples
    from captcha_ocr.evaluate import evaluate
    from captcha_ocr.infer import Reader

    reader = Reader.load(args.model, threads=args.threads)
    samples = find_samples(args.data, args.label_pattern, args.ignore_case)
    report = evaluate(reader, samples, args.batch_size, args.beam_width, progress=True)
    wrong = report.wrong
    if wrong:
        print(f"{len(wrong)} wrong prediction(s):")
        for r in wrong[: args.show]:
            shown = r.prediction if r.error is None else f"<unreadable: {r.error}>"
            print(f"  {r.path}\tlabel {r.label}\tread {shown}\tconfidence {r.confidence:.3f}")
        if len(wrong) > args.show:
            print(f"  ... and {len(wrong) - args.show} more (see --report)")
        confused = report.confusions().most_common(8)
        if confused:
            print(
                "most confused (label -> read): "
                + ", ".join(f"{a}->{b} {n}x" for (a, b), n in confused)
            )
    print(
        f"images {report.count}  accuracy {report.accuracy:.2%}  CER {report.cer:.4f}  "
        f"WER {report.wer:.4f}  speed {report.images_per_second:.0f} img/s"
    )
    if args.report:
        report.save(args.report)
        log.info("report written to %s", args.report)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from captcha_ocr.serve import run_server
    except ImportError as error:
        raise CaptchaOCRError(
            f"serve needs the [serve] extra ({error.name} is missing): pip install 'captcha-ocr[serve]'"
        ) from None

    settings = ServeSettings(
        **{field.name: getattr(args, field.name) for field in dataclasses.fields(ServeSettings)}
    )
    run_server(args.model, host=args.host, port=args.port, workers=args.workers, settings=settings)
    return 0


# --- parser ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="captcha-ocr",
        description="Train a captcha reader from labeled images, export it to ONNX, read captchas.",
        epilog="Example: captcha-ocr synth data/demo --count 2000 && captcha-ocr train data/demo --out runs",
    )
    parser.add_argument("--version", action="version", version=f"captcha-ocr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_text: str, func) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    p = add("synth", "draw labeled captcha PNGs (the built-in default data)", cmd_synth)
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

    p = add("download", "download and unpack a dataset archive (zip or tar)", cmd_download)
    p.add_argument("url", metavar="URL", help="http(s):// or file:// URL of the archive")
    p.add_argument("--to", default="Datasets", help="target folder (default Datasets)")
    p.add_argument("--sha256", help="expected SHA-256 of the archive")

    p = add("train", "train a reader on labeled images, then export it to ONNX", cmd_train)
    p.add_argument(
        "data", metavar="DATA", nargs="?", help="folder of labeled images, or a path,label CSV"
    )
    p.add_argument("--out", help=f"where run folders are made (default {DEFAULT_RUNS_DIR})")
    p.add_argument("--preset", help="network: default, reference or tiny (default: default)")
    p.add_argument(
        "--epochs",
        type=int,
        help="epoch budget (default: about 60 epochs, 1,800 to 20,000 optimizer steps)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        help="images per optimizer step, all devices together (default 32; reference: 64)",
    )
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--seed", type=int, help="seed for the split, augmentation and weights")
    _add_input_size_options(p)
    p.add_argument(
        "--channels", type=int, choices=(1, 3), help="1 = grey, 3 = RGB (default: preset's)"
    )
    p.add_argument("--patience", type=int, help="early stopping patience in epochs")
    p.add_argument("--val-fraction", type=float, help="share held out for validation (default 0.1)")
    p.add_argument("--time-limit", type=float, help="stop after this many seconds of training")
    p.add_argument(
        "--pretrain",
        choices=("synth",),
        help="first train on generated captchas that imitate the data, then fine-tune",
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
    p.add_argument("--config", help="YAML file of training settings (flags override it)")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted run with its own settings (only --epochs, a new epoch "
        "budget, and --devices can change)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_label_options(p)
    p.add_argument(
        "--strict", action="store_true", help="unreadable images are an error, not a skip"
    )
    # Every train option's default, so --resume can tell which ones were given.
    p.set_defaults(train_defaults={a.dest: a.default for a in p._actions if a.dest != "help"})

    p = add(
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
    _add_size_options(p)
    _add_label_options(p)

    p = add(
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
    _add_size_options(p)
    _add_label_options(p)

    p = add(
        "export", f"export a run's best model to RUN_DIR/{ONNX_FILE} (checks parity)", cmd_export
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument(
        "--int8",
        action="store_true",
        help=f"also write {INT8_ONNX_FILE}, kept only if its validation accuracy is within "
        f"{_INT8_POINTS} of the float model",
    )

    p = add("predict", "read captcha images with a trained model", cmd_predict)
    p.add_argument("model", metavar="MODEL", help="run folder or .onnx file")
    p.add_argument("images", metavar="IMAGES_OR_DIRS", nargs="+")
    p.add_argument("--json", action="store_true", help="JSON lines output")
    _add_read_options(p)

    p = add("evaluate", "score a model on labeled images: CER, WER, accuracy, speed", cmd_evaluate)
    p.add_argument("model", metavar="MODEL", help="run folder or .onnx file")
    p.add_argument(
        "data", metavar="DATA_OR_CSV", help="folder of labeled images, or a path,label CSV"
    )
    p.add_argument(
        "--report", metavar="FILE.json", help="write every prediction and the scores as JSON"
    )
    p.add_argument("--show", type=int, default=20, help="wrong predictions to print (default 20)")
    _add_label_options(p)
    _add_read_options(p)

    p = add("serve", "serve a model over HTTP (POST /v1/read; docs at /docs)", cmd_serve)
    p.add_argument("model", metavar="MODEL", help="run folder or .onnx file")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--workers", type=int, default=1, help="server processes, each with the model loaded once"
    )
    p.add_argument(
        "--threads",
        type=int,
        help="ONNX Runtime threads per worker (default 1; use --workers for more cores)",
    )
    defaults = ServeSettings()  # each flag's default is the field of the same name
    for flag, kind, what in (
        ("--batch-wait-ms", float, "ms a request waits to share a model call; 0: no batching"),
        ("--max-batch", int, "largest micro-batch"),
        ("--max-image-bytes", int, "bytes per image"),
        ("--max-images", int, "images per request"),
        ("--max-pixels", int, "pixels per image, checked before decoding"),
        ("--max-body-bytes", int, "bytes of the whole request body"),
    ):
        default = getattr(defaults, flag[2:].replace("-", "_"))
        p.add_argument(flag, type=kind, default=default, help=f"{what} (default {default:,})")
    return parser


def _add_input_size_options(p: argparse.ArgumentParser) -> None:
    """--height/--width, read by data.model_input_size (train, inspect, augment-preview)."""
    small = PRESETS["default"].scale_up
    p.add_argument(
        "--height",
        type=int,
        help="model input height (default: the data's most common; "
        f"default preset: under {small.below} px scaled to {small.to})",
    )
    p.add_argument(
        "--width", type=int, help="model input width (default: the data's, scaled with the height)"
    )


def _add_size_options(p: argparse.ArgumentParser) -> None:
    _add_input_size_options(p)
    p.add_argument(
        "--channels", type=int, choices=(1, 3), help="1 = grey, 3 = RGB (default: the preset's)"
    )
    p.add_argument("--seed", type=int, default=0, help="which samples to show")


def _add_label_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--label-pattern",
        metavar="REGEX",
        help="regex with a group (?P<label>...) matched on the file name without suffix "
        "(default: the name, less a _<k> repeat suffix)",
    )
    p.add_argument("--ignore-case", action="store_true", help="fold labels to lower case")


def _add_read_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, default=64, help="images per model call (default 64)")
    p.add_argument(
        "--beam-width", type=int, default=1, help="1 = greedy decoding; >1 = beam search"
    )
    p.add_argument("--threads", type=int, help="ONNX Runtime threads (default: one per core)")
    p.add_argument("--allowed-chars", help="restrict the output to these characters")


def _never_fail_to_print() -> None:
    """A file name that is not valid UTF-8 (Linux allows any bytes) is printed with escapes
    instead of stopping the program with UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (tests call this directly)."""
    _never_fail_to_print()
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.func(args)
    except CaptchaOCRError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
