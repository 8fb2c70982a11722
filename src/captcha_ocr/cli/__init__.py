"""The ``captcha-ocr`` command: a thin layer over the library.

``main`` wires the parser; each command and its flags live in one module by what it does
with data: ``data_commands`` (synth, download, inspect, augment-preview), ``train_commands``
(train, export), ``read_commands`` (predict, evaluate), ``serve_commands`` (serve) and
``label_commands`` (label); flags several commands share are in ``options``. Only the commands that need Keras/TensorFlow import it, inside
the command.

Errors the user can fix print one line (``error: ...``) and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from captcha_ocr.cli import (
    data_commands,
    label_commands,
    read_commands,
    serve_commands,
    train_commands,
)
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.version import __version__

# The commands in the order `captcha-ocr --help` lists them.
COMMANDS = (
    data_commands.add_synth,
    data_commands.add_download,
    label_commands.add_label,
    train_commands.add_train,
    data_commands.add_inspect,
    data_commands.add_augment_preview,
    train_commands.add_export,
    read_commands.add_predict,
    read_commands.add_evaluate,
    read_commands.add_pseudo_label,
    serve_commands.add_serve,
)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: global flags, then one subcommand per entry of COMMANDS."""
    parser = argparse.ArgumentParser(
        prog="captcha-ocr",
        description="Train a captcha reader from labeled images, export it to ONNX, read captchas.",
        epilog="Example: captcha-ocr synth data/demo --count 2000 && captcha-ocr train data/demo --out runs",
    )
    parser.add_argument("--version", action="version", version=f"captcha-ocr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


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


def _never_fail_to_print() -> None:
    """A file name that is not valid UTF-8 (Linux allows any bytes) is printed with escapes
    instead of stopping the program with UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
