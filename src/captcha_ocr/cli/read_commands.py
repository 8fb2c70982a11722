"""Commands that read captchas with a trained model: ``predict``, ``evaluate`` (``serve`` is
in ``serve_commands``).

They need only the ONNX reader (NumPy, Pillow, ONNX Runtime), never Keras or TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import logging

from captcha_ocr.cli.options import (
    PSEUDO_MIN_CONFIDENCE,
    add_command,
    add_label_options,
    add_read_options,
    image_paths,
    min_confidence_flag,
)
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.progress import READ_PROGRESS_FROM

log = logging.getLogger("captcha_ocr")


def add_predict(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "predict", "read captcha images with a trained model", cmd_predict)
    p.add_argument(
        "model",
        metavar="MODEL",
        help="run folder, .onnx file, or 'base' (the base model shipped in the package)",
    )
    p.add_argument(
        "images",
        metavar="SOURCE",
        nargs="+",
        help="images and folders (read recursively); with --engine ray also a text file "
        "listing image paths, or a glob, local or on s3://, gs://, ... (fsspec)",
    )
    p.add_argument("--json", action="store_true", help="JSON lines output")
    add_read_options(p)
    p.add_argument(
        "--min-confidence",
        metavar="P|recommended",
        help="print readings below this confidence as rejected (no text); 'recommended': the "
        "model's own threshold, chosen at export for 99%% precision on its validation images "
        "(or the highest they allow)",
    )
    p.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: this process (default); ray: Ray Data tasks and actors, on this machine "
        "or a cluster (pip install 'captcha-ocr[scale]')",
    )
    p.add_argument(
        "--address",
        help="--engine ray: the Ray cluster, 'auto' (the one started on this machine) or "
        "ray://HOST:10001 (default: a new Ray on this machine's cores)",
    )
    p.add_argument(
        "--out",
        metavar="RESULTS.parquet|RESULTS.jsonl",
        help="--engine ray: write the rows (path, text, confidence, error) to this new folder "
        "of Parquet or JSONL shards instead of printing them",
    )
    p.add_argument(
        "--actors",
        type=int,
        help="--engine ray: model actors, one CPU each (default: all the cluster's CPUs)",
    )


def cmd_predict(args: argparse.Namespace) -> int:
    if args.engine == "ray":
        if args.min_confidence is not None:
            raise CaptchaOCRError(
                "--min-confidence is for --engine local; with ray, filter the confidence "
                "column of the results"
            )
        return _predict_on_ray(args)
    for flag in ("address", "out", "actors"):
        if getattr(args, flag) is not None:
            raise CaptchaOCRError(f"--{flag} needs --engine ray")
    from captcha_ocr.infer import Reader

    reader = Reader.load(args.model, threads=args.threads)
    min_confidence = None
    if args.min_confidence is not None:
        min_confidence = reader.min_confidence(min_confidence_flag(args.min_confidence))
    paths = image_paths(args.images)
    predictions = reader.read_batch(
        paths,
        batch_size=args.batch_size,
        beam_width=args.beam_width,
        allowed_chars=args.allowed_chars,
        skip_errors=True,
        progress=len(paths) > READ_PROGRESS_FROM and not args.json,
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
        rejected = min_confidence is not None and prediction.confidence < min_confidence
        text = None if rejected else prediction.text
        if args.json:
            row = {"path": path, "text": text, "confidence": round(prediction.confidence, 6)}
            if min_confidence is not None:
                row["rejected"] = rejected
            print(json.dumps(row, ensure_ascii=False))
        else:
            shown = "\trejected" if rejected else ""
            print(f"{path}\t{text or ''}\t{prediction.confidence:.4f}{shown}")
    if failed:
        log.warning("%d of %d image(s) could not be read", failed, len(paths))
    return 1 if failed else 0


def _predict_on_ray(args: argparse.Namespace) -> int:
    """predict --engine ray: the rows to --out shards, or printed as plain predict prints them."""
    from captcha_ocr.bulk import import_ray, read_dataset

    if args.threads is not None:
        raise CaptchaOCRError("--threads is for --engine local; with ray, use --actors")
    import_ray()  # says how to install Ray before any work
    summary = read_dataset(
        args.model,
        args.images,
        out=args.out,
        address=args.address,
        batch_size=args.batch_size,
        actors=args.actors,
        beam_width=args.beam_width,
        allowed_chars=args.allowed_chars,
        progress=not args.json or args.out is not None,
    )
    for row in summary.rows:
        if args.json:
            print(json.dumps(row, ensure_ascii=False))
        elif row["error"] is None:
            print(f"{row['path']}\t{row['text']}\t{row['confidence']:.4f}")
        else:
            log.warning("skipped %s", row["error"])
    where = f"; rows in {summary.out}" if summary.out else ""
    log.info(
        "read %d image(s) in %.1f s (%.0f img/s)%s",
        summary.count,
        summary.seconds,
        summary.images_per_second,
        where,
    )
    if summary.failed == summary.count:
        what = summary.first_error
        if summary.count > 1:
            what = f"none of the {summary.count} images could be read, e.g. {what}"
        raise CaptchaOCRError(
            f"{what}{where}; check that the files are images (PNG, JPEG, ...) and not damaged"
        )
    if summary.failed:
        log.warning(
            "%d of %d image(s) could not be read%s",
            summary.failed,
            summary.count,
            " (their rows have the error)" if summary.out else "",
        )
    return 1 if summary.failed else 0


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "evaluate", "score a model on labeled images: CER, WER, accuracy, speed", cmd_evaluate
    )
    p.add_argument("model", metavar="MODEL", help="run folder or .onnx file")
    p.add_argument(
        "data", metavar="DATA_OR_CSV", help="folder of labeled images, or a path,label CSV"
    )
    p.add_argument(
        "--report", metavar="FILE.json", help="write every prediction and the scores as JSON"
    )
    p.add_argument("--show", type=int, default=20, help="wrong predictions to print (default 20)")
    p.add_argument(
        "--suspects",
        type=int,
        default=0,
        metavar="N",
        help="print the N images whose labels look most wrong: read otherwise, surest first",
    )
    p.add_argument(
        "--suspects-out",
        metavar="PREFIX",
        help="write every such image to PREFIX.csv (path,label,read,confidence) and a grid "
        "of the first to PREFIX.png, to check and fix their labels",
    )
    add_label_options(p)
    add_read_options(p)


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.suspects < 0:
        raise CaptchaOCRError(f"--suspects must be >= 0 (got {args.suspects})")
    from captcha_ocr.data import find_samples
    from captcha_ocr.evaluate import evaluate
    from captcha_ocr.infer import Reader

    reader = Reader.load(args.model, threads=args.threads)
    samples = find_samples(args.data, args.label_pattern, args.ignore_case)
    report = evaluate(
        reader,
        samples,
        args.batch_size,
        args.beam_width,
        progress=True,
        allowed_chars=args.allowed_chars,
    )
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
    if args.suspects or args.suspects_out:
        _show_suspects(report, args.suspects, args.suspects_out)
    return 0


def _show_suspects(report, count: int, prefix: str | None) -> None:
    """evaluate --suspects N / --suspects-out PREFIX."""
    from captcha_ocr.suspects import find_suspects, format_suspects, write_suspects

    suspects = find_suspects(report)
    if count:
        print(f"{len(suspects)} image(s) read differently from their labels; the surest reads:")
        print(format_suspects(suspects[:count]) if suspects else "  (none)")
    if prefix:
        title = "suspect labels: read otherwise than labeled, surest read first"
        grid = write_suspects(f"{prefix}.csv", f"{prefix}.png", suspects, title)
        log.info("suspects written to %s.csv%s", prefix, f" and {grid}" if grid else "")


def add_pseudo_label(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "pseudo-label",
        "read unlabeled images with a run and keep its surest reads as labels (self-training)",
        cmd_pseudo_label,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder made by captcha-ocr train")
    p.add_argument(
        "images", metavar="SOURCE", nargs="+", help="unlabeled images and folders (recursively)"
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="LABELS.csv",
        help="the labels file to write: the run's own labels, then the kept reads "
        "(path,label,confidence,source,part: train validates on the run's own validation "
        "images, the rows of part val); train on it with captcha-ocr train LABELS.csv",
    )
    p.add_argument(
        "--min-confidence",
        default=PSEUDO_MIN_CONFIDENCE,
        metavar="P|recommended",
        help="keep reads of at least this confidence (default %(default)s; 'recommended': the "
        "run's reject threshold, chosen at export for 99%% precision on its validation images)",
    )
    p.add_argument("--threads", type=int, help="ONNX Runtime threads (default: one per core)")
    p.add_argument("--batch-size", type=int, default=64)


def cmd_pseudo_label(args: argparse.Namespace) -> int:
    from captcha_ocr.infer import resolve_model_path
    from captcha_ocr.pseudo_labels import pseudo_label, write_pseudo_csv

    run_dir = resolve_model_path(args.run_dir).parent
    threshold = min_confidence_flag(args.min_confidence)
    paths = image_paths(args.images)
    result = pseudo_label(
        run_dir,
        paths,
        threshold,
        args.threads,
        args.batch_size,
        progress=len(paths) > READ_PROGRESS_FROM,
    )
    out = write_pseudo_csv(result, args.out)
    print(
        f"{result.describe()}\n"
        f"wrote {out}: the run's {result.labels:,} labels and {len(result.kept):,} "
        f"pseudo-labels\n"
        f"train on them: captcha-ocr train {out}"
    )
    return 0
