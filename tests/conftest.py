"""Shared fixtures: tiny synthetic captchas and one tiny trained run, made once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.browser import browser  # noqa: F401  (the fixture the page tests share)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SHARED_DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "captcha_images_v2"
SYNTH_SIZE = (100, 32)  # small images keep the tiny model fast
SYNTH_CHARSET = "abcd1234"


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~200 labeled captchas with labels of 3 to 5 characters."""
    from captcha_ocr.synth import synthesize

    folder = tmp_path_factory.mktemp("synth")
    synthesize(folder, 200, charset=SYNTH_CHARSET, lengths=(3, 5), size=SYNTH_SIZE, seed=7)
    return folder


@pytest.fixture(scope="session")
def trained_run(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder made through the CLI: tiny preset, a few epochs, exported to ONNX."""
    from captcha_ocr.cli import main

    out = tmp_path_factory.mktemp("runs")
    status = main(
        [
            "train",
            str(synth_dir),
            "--out",
            str(out),
            "--preset",
            "tiny",
            "--epochs",
            "4",
            "--quiet",
            "--seed",
            "3",
        ]
    )
    assert status == 0
    return (out / "latest").resolve()


@pytest.fixture(scope="session")
def random_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model without training: a fixed random linear ONNX reader (tests.helpers.write_model),
    alone in its folder, read-only."""
    from tests.helpers import write_model

    return write_model(tmp_path_factory.mktemp("model") / "model.onnx")


@pytest.fixture(scope="session")
def random_reader(random_model: Path):
    """The ``Reader`` of :func:`random_model`, on one thread."""
    from captcha_ocr.infer import Reader

    return Reader.load(random_model, threads=1)
