"""Each default is written once: the CLI's flags and the library's keyword defaults read the
same constants, so they cannot drift apart."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from captcha_ocr.charset import DEFAULT_CHARSET
from captcha_ocr.cli import build_parser
from captcha_ocr.config import INT8_MAX_ACCURACY_DROP, ServeSettings


def test_every_serve_setting_is_a_flag_with_its_default() -> None:
    from captcha_ocr.cli.serve_commands import _serve_values

    args = build_parser().parse_args(["serve", "model.onnx"])
    # What cmd_serve builds from its flags, the environment empty: a missing flag would be a
    # KeyError here.
    _, values, _ = _serve_values(args, {})
    fields = dataclasses.fields(ServeSettings)
    assert ServeSettings(**{f.name: values[f.name] for f in fields}) == ServeSettings()


def test_synth_draws_from_the_default_charset() -> None:
    from captcha_ocr.synth import synthesize

    assert build_parser().parse_args(["synth", "out"]).charset == DEFAULT_CHARSET
    assert inspect.signature(synthesize).parameters["charset"].default == DEFAULT_CHARSET


def test_int8_keeps_the_one_accuracy_limit(capsys: pytest.CaptureFixture) -> None:
    from captcha_ocr.export import export_int8

    assert inspect.signature(export_int8).parameters["max_drop"].default == INT8_MAX_ACCURACY_DROP
    with pytest.raises(SystemExit):
        build_parser().parse_args(["export", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"within {100 * INT8_MAX_ACCURACY_DROP:g} points" in help_text
