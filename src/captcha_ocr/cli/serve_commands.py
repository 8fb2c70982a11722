"""``captcha-ocr serve``: a model over HTTP. Each flag falls back on an environment variable
(``CAPTCHA_OCR_SERVE_`` + its name), then on its default, as the container image expects.

It needs the ONNX reader and the [serve] extra (FastAPI, uvicorn), never Keras or TensorFlow.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from captcha_ocr.cli.options import add_command
from captcha_ocr.config import SERVE_ENV_PREFIX, ServeSettings
from captcha_ocr.errors import CaptchaOCRError

log = logging.getLogger("captcha_ocr")


def _serve_flags() -> list[tuple[str, type, object, str]]:
    """The flags of ``serve`` that the environment may set too: (flag, type, default, help).
    Host, port and workers are the server's; the rest are :class:`ServeSettings` fields, and
    their defaults are read from it."""
    settings = ServeSettings()
    limits = (
        ("--batch-wait-ms", float, "ms a request waits to share a model call; 0: no batching"),
        ("--max-batch", int, "largest micro-batch"),
        ("--max-image-bytes", int, "bytes per image"),
        ("--max-images", int, "images per request"),
        ("--max-pixels", int, "pixels per image, checked before decoding"),
        ("--max-body-bytes", int, "bytes of the whole request body"),
    )
    return [
        ("--host", str, "127.0.0.1", "address to listen on; 0.0.0.0: every address"),
        ("--port", int, 8000, "port"),
        ("--workers", int, 1, "server processes, each with the model loaded once"),
        (
            "--threads",
            int,
            settings.threads,
            "ONNX Runtime threads per worker, 1 unless set; for more cores, add --workers",
        ),
        *((flag, kind, getattr(settings, _dest(flag)), what) for flag, kind, what in limits),
    ]


def _dest(flag: str) -> str:
    return flag[2:].replace("-", "_")


def _env_name(dest: str) -> str:
    return SERVE_ENV_PREFIX + dest.upper()


def add_serve(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "serve", "serve a model over HTTP (POST /v1/read; docs at /docs)", cmd_serve
    )
    p.epilog = (
        f"Each flag not given is read from the environment, as {SERVE_ENV_PREFIX} + its name "
        f"in upper case (e.g. {_env_name('max_batch')}=32), then from the default; MODEL too, "
        f"from {_env_name('model')}. The container image is set up this way."
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        nargs="?",
        help=f"run folder or .onnx file (default: ${_env_name('model')})",
    )
    for flag, kind, default, what in _serve_flags():
        # default=None: "not given", so that the environment can fill it in (cmd_serve)
        shown = "" if default is None else f"default {_show(default)}; "
        p.add_argument(flag, type=kind, help=f"{what} ({shown}env {_env_name(_dest(flag))})")


def _show(default: object) -> str:
    """``2,000,000`` for a byte or pixel limit; ports and small numbers as they are."""
    return f"{default:,}" if isinstance(default, int) and default >= 10_000 else str(default)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from captcha_ocr.serve import run_server
    except ImportError as error:
        raise CaptchaOCRError(
            f"serve needs the [serve] extra ({error.name} is missing): pip install 'captcha-ocr[serve]'"
        ) from None

    model, values, from_env = _serve_values(args, os.environ)
    if from_env:
        log.info("from the environment: %s", ", ".join(from_env))
    try:
        settings = ServeSettings(
            **{field.name: values[field.name] for field in dataclasses.fields(ServeSettings)}
        )
        problems = [
            f"{what} (got {values[name]})"
            for name, what, ok in (
                ("port", "port must be 0 to 65535", 0 <= values["port"] <= 65535),
                ("workers", "workers must be >= 1", values["workers"] >= 1),
            )
            if not ok
        ]
        if problems:
            raise CaptchaOCRError("serve settings: " + "; ".join(problems))
    except CaptchaOCRError as error:
        if from_env:  # name the variables: the user may not know they are set
            raise CaptchaOCRError(f"{error} (environment: {', '.join(from_env)})") from None
        raise
    run_server(
        model,
        host=values["host"],
        port=values["port"],
        workers=values["workers"],
        settings=settings,
    )
    return 0


def _serve_values(
    args: argparse.Namespace, environ: Mapping[str, str]
) -> tuple[str, dict[str, object], list[str]]:
    """The model and each setting: the flag if given, else its environment variable, else the
    default -> (model, {name: value}, the ``NAME=value`` strings taken from the environment)."""
    values: dict[str, object] = {}
    from_env: list[str] = []
    for flag, kind, default, _ in _serve_flags():
        dest = _dest(flag)
        value = getattr(args, dest)
        raw = environ.get(_env_name(dest), "").strip()
        if value is None and raw:
            value = _parse_env(_env_name(dest), raw, kind)
            from_env.append(f"{_env_name(dest)}={raw}")
        values[dest] = default if value is None else value
    model = args.model
    model_env = _env_name("model")
    if model is None:
        model = environ.get(model_env, "").strip()
        if not model:
            raise CaptchaOCRError(
                f"serve needs a model: give MODEL (a run folder or .onnx file) or set {model_env}"
            )
        if not Path(model).exists():
            raise CaptchaOCRError(
                f"model {model} (from {model_env}) not found: mount a run folder or .onnx file "
                f"there (e.g. -v $PWD/runs/latest:{model}:ro) or set {model_env} to one"
            )
        from_env.insert(0, f"{model_env}={model}")
    return model, values, from_env


def _parse_env(name: str, raw: str, kind: type) -> object:
    """``raw`` as ``kind``, or an error that names the variable."""
    try:
        return kind(raw)
    except ValueError:
        what = {int: "a whole number", float: "a number"}[kind]
        raise CaptchaOCRError(
            f"{name}={raw!r} is not {what}: set it to one (e.g. {name}={kind(1)}) or unset it"
        ) from None
