"""``train --init RUN``: a new run starts from a trained run's weights, wherever they fit."""

from __future__ import annotations

import csv
import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from captcha_ocr.config import load_run_config
from captcha_ocr.runfolder import RunState
from captcha_ocr.warmstart import _class_map, init_spec, resample_rows
from tests.helpers import fails, succeeds

pytestmark = pytest.mark.slow


def test_class_map_keeps_the_blank_and_known_characters():
    assert _class_map("abc", "cxa").tolist() == [0, 3, -1, 1]


def _outputs(model, spec) -> np.ndarray:
    pixels = np.random.default_rng(0).uniform(0, 255, (2, *spec.input_size.shape(spec.channels)))
    return np.asarray(model(pixels.astype("float32"), training=False))


def test_same_spec_copies_every_weight(trained_run: Path):
    from captcha_ocr.model import build_model, load_best_model
    from captcha_ocr.warmstart import initial_weights

    spec = init_spec(trained_run)
    model = build_model(spec)
    model.set_weights(initial_weights(trained_run, spec))
    source = load_best_model(trained_run)
    np.testing.assert_allclose(_outputs(model, spec), _outputs(source, spec), atol=1e-5)


def test_known_characters_keep_their_output_weights_and_new_ones_start_fresh(trained_run: Path):
    from captcha_ocr.model import build_model, load_best_model
    from captcha_ocr.warmstart import initial_weights

    source_spec = init_spec(trained_run)  # charset "1234abcd"
    spec = dataclasses.replace(source_spec, charset="ba9", width=source_spec.width + 16)
    weights = initial_weights(trained_run, spec)
    source_kernel = load_best_model(trained_run).get_weights()[-2]
    kernel = weights[-2]
    assert kernel.shape[-1] == 4  # blank, b, a, 9
    np.testing.assert_array_equal(kernel[:, 0], source_kernel[:, 0])
    np.testing.assert_array_equal(
        kernel[:, 1], source_kernel[:, source_spec.charset.index("b") + 1]
    )
    np.testing.assert_array_equal(
        kernel[:, 2], source_kernel[:, source_spec.charset.index("a") + 1]
    )
    assert not any(np.allclose(kernel[:, 3], column) for column in source_kernel.T)
    model = build_model(spec)
    model.set_weights(weights)  # every shape fits the new network


def test_a_taller_input_resamples_the_projection(trained_run: Path, caplog):
    """Twice the height: the feature map has twice the rows, so the projection that reads them
    is interpolated to twice the rows at half the weight; everything else is copied as is."""
    from captcha_ocr.model import build_model, load_best_model
    from captcha_ocr.warmstart import initial_weights, resample_rows

    source_spec = init_spec(trained_run)
    spec = dataclasses.replace(source_spec, height=source_spec.height * 2)
    with caplog.at_level("INFO"):
        weights = initial_weights(trained_run, spec)
    assert "did not fit" not in caplog.text
    assert f"resampled from {source_spec.height} to {spec.height} px" in caplog.text
    source = load_best_model(trained_run).get_weights()
    differ = [i for i, (a, b) in enumerate(zip(weights, source)) if a.shape != b.shape]
    assert len(differ) == 1  # the projection kernel, (rows * channels, units)
    kernel, source_kernel = weights[differ[0]], source[differ[0]]
    assert kernel.shape == (2 * source_kernel.shape[0], source_kernel.shape[1])
    channels = 16  # the tiny network's last convolution
    np.testing.assert_allclose(
        kernel, resample_rows(source_kernel, channels, len(kernel) // channels)
    )
    build_model(spec).set_weights(weights)  # every shape fits


def test_resampled_rows_keep_a_row_constant_kernel():
    """A kernel that weighs every row alike gives the same sum over any number of rows of
    equal features: the projection's output keeps its size at another height."""
    kernel = np.tile(np.random.default_rng(0).normal(size=(1, 3, 5)), (4, 1, 1)).reshape(12, 5)
    features = np.random.default_rng(1).normal(size=3)
    for rows in (3, 5, 8):
        resampled = resample_rows(kernel, 3, rows)
        np.testing.assert_allclose(
            np.tile(features, rows) @ resampled, np.tile(features, 4) @ kernel, rtol=1e-5
        )


def test_train_init_starts_where_the_source_run_ended(
    trained_run: Path, synth_dir: Path, tmp_path: Path, capsys
):
    """With a learning rate near zero, the first epoch's validation loss is near the source's
    (batch-norm statistics still move): the weights were used. A fresh network's is far off
    (measured: source 15.3, started from it 14.0, fresh 39.1)."""
    out = tmp_path / "runs"
    succeeds(
        ["train", str(synth_dir), "--init", str(trained_run), "--out", str(out), "--epochs", "1",
         "--lr", "1e-9", "--seed", "3", "--quiet", "--min-accuracy", "0", "--no-rescue"],
        capsys,
    )  # fmt: skip
    spec, config, _ = load_run_config(out / "latest")
    assert spec.preset == "tiny"  # the network of the run it started from, without --preset
    assert config.init == str(trained_run)

    def val_loss(run: Path, epoch: int) -> float:
        with open(run / "history.csv", newline="") as f:
            return float(next(r for r in csv.DictReader(f) if int(r["epoch"]) == epoch)["val_loss"])

    # The source's best epoch is the model that --init starts from.
    source = val_loss(trained_run, RunState.load(trained_run).best_epoch)
    started = val_loss(out / "latest", 1)
    assert started == pytest.approx(source, rel=0.15)


def test_init_errors_are_clear(trained_run: Path, synth_dir: Path, tmp_path: Path, capsys):
    out = str(tmp_path / "runs")
    fails(["train", str(synth_dir), "--init", str(tmp_path), "--out", out], capsys,
          "not a run folder")  # fmt: skip
    fails(["train", str(synth_dir), "--init", str(trained_run), "--pretrain", "synth",
           "--out", out], capsys, "don't mix")  # fmt: skip
    fails(["train", str(synth_dir), "--init", str(trained_run), "--preset", "default",
           "--out", out], capsys, "leave --preset out")  # fmt: skip


def test_a_run_of_another_network_version_is_refused_clearly(trained_run: Path, monkeypatch):
    """A run made before its preset's network changed has other weight tensors: the error
    says so, and nothing is half copied."""
    from captcha_ocr import model as model_module
    from captcha_ocr.errors import CaptchaOCRError
    from captcha_ocr.warmstart import initial_weights

    tiny = model_module.BUILDERS["tiny_crnn"]

    def changed(inputs, num_classes):
        return tiny(model_module.layers.BatchNormalization()(inputs), num_classes)

    monkeypatch.setitem(model_module.BUILDERS, "tiny_crnn", changed)
    with pytest.raises(CaptchaOCRError, match="another network for this preset"):
        initial_weights(trained_run, init_spec(trained_run))


def test_the_input_keeps_the_size_of_the_data_when_starting_from_a_model(
    synth_dir: Path, trained_run: Path
):
    """The source's height does not carry over: its weights are resampled to the data's."""
    from captcha_ocr.config import TrainConfig
    from captcha_ocr.data import find_samples
    from captcha_ocr.train import measure_spec

    samples = find_samples(synth_dir)  # 100x32 images
    init = dataclasses.replace(init_spec(trained_run), height=64, channels=3)
    spec = measure_spec(samples, TrainConfig(preset="tiny"), init)
    assert (spec.input_size, spec.channels) == ((100, 32), 3)  # the source's channels
    assert measure_spec(samples, TrainConfig(preset="tiny", height=40), init).height == 40


def test_a_default_run_starts_from_the_base_model_unless_told_otherwise(synth_dir: Path):
    """init "auto": the base model for its own network, unless the run pre-trains; "none"
    starts from random weights; a run's configs.yaml records where it really started."""
    from captcha_ocr.basemodel import BASE_NAME
    from captcha_ocr.config import TrainConfig, resolve_train_config
    from captcha_ocr.train import _planned_run
    from captcha_ocr.warmstart import resolve_init

    assert TrainConfig().init == "auto"
    assert resolve_init(TrainConfig()).init == BASE_NAME
    assert resolve_init(TrainConfig(init="none")).init is None
    assert resolve_init(TrainConfig(pretrain="synth")).init is None
    assert resolve_init(TrainConfig(preset="tiny")).init is None  # not the base's network
    assert resolve_init(TrainConfig(preset="reference")).init is None
    # a run folder: the folder itself, as --out may move a latest link before it is read
    assert resolve_init(TrainConfig(init="runs/x")).init == os.path.realpath("runs/x")
    # --pretrain synth with the default init is no mix of the two
    resolve_train_config(cli_overrides={"pretrain": "synth"})
    run = _planned_run(synth_dir, TrainConfig(), None)  # 100x32 images
    assert (run.config.init, run.spec.input_size) == (BASE_NAME, (200, 64))
    fresh = _planned_run(synth_dir, TrainConfig(init="none"), None)
    assert (fresh.config.init, fresh.spec.input_size) == (None, (200, 64))  # scaled up anyway


def test_train_init_none_parses(synth_dir: Path, tmp_path: Path, capsys):
    out = str(tmp_path / "runs")
    fails(["train", str(synth_dir), "--init", "none", "--pretrain", "synth", "--epochs", "0",
           "--out", out], capsys, "epochs must be >= 1")  # fmt: skip
