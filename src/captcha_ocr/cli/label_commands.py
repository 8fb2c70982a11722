"""The ``label`` command: a local web app to label a folder of captchas, with the model
suggesting the text and training rounds in the background (see :mod:`captcha_ocr.label`)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from captcha_ocr.cli.options import add_command
from captcha_ocr.cli.train_commands import DEFAULT_RUNS_DIR
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.label.queue import DEFAULT_ORDER, ORDERS
from captcha_ocr.label.rounds import DEFAULT_FIRST_ROUND_ARGS


def add_label(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "label",
        "label a folder of captchas in the browser; the model suggests, rounds train it",
        cmd_label,
    )
    p.add_argument("images", metavar="IMAGES", help="folder of captchas (read recursively)")
    p.add_argument("--labels", metavar="FILE", help="path,label CSV (default IMAGES/labels.csv)")
    p.add_argument(
        "--model",
        metavar="RUN|ONNX",
        help="suggestions from the start; a run folder is also where round 1 starts from",
    )
    p.add_argument(
        "--round-size",
        type=int,
        default=50,
        help="train a round after this many new labels (default 50)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--charset", metavar="CHARS", help="the characters a label may have (default: any)"
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help=f"work folder for rounds and the journal (default {DEFAULT_RUNS_DIR}/label-<IMAGES name>)",
    )
    p.add_argument(
        "--order",
        choices=ORDERS,
        default=DEFAULT_ORDER,
        help="queue order once a model exists: least or most confident first, the two "
        f"alternating (mix), or random (default {DEFAULT_ORDER})",
    )
    p.add_argument("--seed", type=int, default=0, help="the queue's order before any model")
    p.add_argument(
        "--first-round-args",
        metavar="ARGS",
        help="train flags of the first round when it has no --model run to start from "
        "(default: --init base where the package ships a base model, else "
        f"{shlex.join(DEFAULT_FIRST_ROUND_ARGS)!r}; '--init none' trains from random weights)",
    )
    p.add_argument(
        "--train-args",
        metavar="ARGS",
        default="",
        help="more train flags for every round, e.g. --train-args='--preset tiny --epochs 20'",
    )


def cmd_label(args: argparse.Namespace) -> int:
    try:
        from captcha_ocr.label.app import run_app
        from captcha_ocr.label.session import LabelSession, LabelSettings, default_work_dir
    except ImportError as error:
        raise CaptchaOCRError(
            f"label needs the [serve] extra ({error.name} is missing): pip install 'captcha-ocr[serve]'"
        ) from None

    images = Path(args.images)
    first = args.first_round_args  # None: rounds.first_round_start decides
    settings = LabelSettings(
        images=images,
        work_dir=Path(args.out) if args.out else default_work_dir(images, DEFAULT_RUNS_DIR),
        labels=Path(args.labels) if args.labels else None,
        model=args.model,
        round_size=args.round_size,
        charset=args.charset,
        order=args.order,
        seed=args.seed,
        first_round_args=None if first is None else tuple(_split(first, "--first-round-args")),
        train_args=tuple(_split(args.train_args, "--train-args")),
    )
    if args.charset is not None and not args.charset:
        raise CaptchaOCRError("--charset is empty; give the characters a label may have")
    if not 0 < args.port < 65536:
        raise CaptchaOCRError(f"--port must be 1 to 65535 (got {args.port})")
    session = LabelSession(settings)
    try:
        run_app(session, args.host, args.port)
    finally:
        session.close()
    return 0


def _split(text: str, flag: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as error:
        raise CaptchaOCRError(f"{flag} {text!r}: {error}") from None
