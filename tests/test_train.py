"""Training behaviour: label checks before training, resume, Ctrl-C, variable-length labels."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from captcha_ocr.config import resolve_train_config
from captcha_ocr.data import read_labels_file
from captcha_ocr.errors import CaptchaOCRError

pytestmark = pytest.mark.slow


def _config(**overrides):
    return resolve_train_config("tiny", cli_overrides={"epochs": 2, "seed": 1, **overrides})


def _epochs(run_dir: Path) -> list[int]:
    with open(run_dir / "history.csv") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def test_ctc_loss_ignores_padding_and_reads_true_lengths() -> None:
    import keras

    from captcha_ocr.fit import CTCLoss

    rng = np.random.default_rng(0)
    log_probs = np.log(rng.dirichlet(np.ones(5), size=(2, 12))).astype(np.float32)
    short = np.array([[1, 2, 0, 0, 0], [3, 3, 4, 0, 0]])
    padded_longer = np.array([[1, 2, 0, 0, 0, 0, 0], [3, 3, 4, 0, 0, 0, 0]])
    a = keras.ops.convert_to_numpy(CTCLoss().call(short, log_probs))
    b = keras.ops.convert_to_numpy(CTCLoss().call(padded_longer, log_probs))
    np.testing.assert_allclose(a, b, rtol=1e-6)
    other = keras.ops.convert_to_numpy(
        CTCLoss().call(np.array([[1, 2, 1, 0, 0], [3, 3, 4, 0, 0]]), log_probs)
    )
    assert other[0] != pytest.approx(a[0])  # the loss does read the label


def test_the_validation_loss_in_numpy_is_the_training_loss() -> None:
    """decode.ctc_loss (the validation loss, NumPy) against fit.CTCLoss (training's): repeated
    characters, padding, a one-character and an empty label."""
    import keras

    from captcha_ocr.decode import ctc_loss
    from captcha_ocr.fit import CTCLoss

    rng = np.random.default_rng(1)
    log_probs = np.log(rng.dirichlet(np.ones(6), size=(6, 14))).astype(np.float32)
    labels = np.array(
        [[1, 2, 3, 0], [1, 1, 2, 0], [2, 2, 2, 2], [5, 0, 0, 0], [3, 4, 3, 4], [0, 0, 0, 0]]
    )
    expected = keras.ops.convert_to_numpy(CTCLoss().call(labels, log_probs))
    np.testing.assert_allclose(ctc_loss(log_probs, labels), expected, rtol=1e-4)


def test_labels_too_long_fail_before_training(synth_dir: Path, tmp_path: Path) -> None:
    from captcha_ocr.train import train

    # Width 16 gives the tiny preset 4 time steps: 5-character labels cannot fit.
    with pytest.raises(CaptchaOCRError, match="CTC steps"):
        train(synth_dir, tmp_path, _config(width=16, height=16))
    assert not any(tmp_path.rglob("*.keras"))


@pytest.mark.parametrize(
    ("size", "flags", "expected"),
    [
        ((200, 50), {}, (200, 50)),  # the reference set: as it is
        ((100, 40), {}, (160, 64)),  # under 48 px high: scaled up, aspect ratio kept
        ((100, 40), {"preset": "tiny"}, (100, 40)),  # only the default preset scales up
        ((100, 40), {"preset": "reference"}, (100, 40)),
        ((100, 40), {"height": 40}, (100, 40)),  # one side given: the other is the data's
        ((100, 40), {"height": 32, "width": 90}, (90, 32)),  # both given: exactly those
    ],
)
def test_input_size_from_the_data(tmp_path: Path, size, flags, expected) -> None:
    from PIL import Image

    from captcha_ocr.data import Sample
    from captcha_ocr.train import measure_spec

    path = tmp_path / "ab12.png"
    Image.new("L", size, 200).save(path)
    spec = measure_spec([Sample(str(path), "ab12")], resolve_train_config("default", {}, flags))
    assert (spec.width, spec.height) == expected


def test_image_size_the_preset_cannot_take(synth_dir: Path, tmp_path: Path) -> None:
    from captcha_ocr.train import train

    with pytest.raises(CaptchaOCRError, match="at least"):
        train(synth_dir, tmp_path, resolve_train_config("default", cli_overrides={"height": 10}))


def test_interrupt_keeps_best_and_resume_continues(
    synth_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from captcha_ocr import train as train_module
    from captcha_ocr.export import export_run
    from captcha_ocr.infer import Reader
    from captcha_ocr.monitor import EpochMonitor

    original = EpochMonitor.on_epoch_end

    def interrupt_in_third_epoch(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(EpochMonitor, "on_epoch_end", interrupt_in_third_epoch)
    result = train_module.train(synth_dir, tmp_path, _config(epochs=5), progress=False)
    monkeypatch.undo()
    assert "interrupted" in result.state.stop_reason
    assert result.state.epochs_done == 2 and _epochs(result.run_dir) == [1, 2]
    assert (result.run_dir / "model.keras").is_file()
    export_run(result.run_dir)
    assert Reader.load(result.run_dir).read(next(synth_dir.glob("*.png"))).text is not None

    resumed = train_module.train(None, tmp_path, resume=result.run_dir, progress=False)
    assert _epochs(resumed.run_dir) == [1, 2, 3, 4, 5]
    assert resumed.state.epochs_done == 5 and "budget" in resumed.state.stop_reason


def test_ctrl_c_mid_epoch_keeps_the_last_complete_epoch_though_not_yet_written(
    synth_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files are written at most every CHECKPOINT_INTERVAL_S; a Ctrl-C in the third epoch
    writes the second from memory: its weights and optimizer state, not the moved-on ones."""
    from captcha_ocr import monitor
    from captcha_ocr.model import load_keras_model
    from captcha_ocr.train import train

    monkeypatch.setattr(monitor, "CHECKPOINT_INTERVAL_S", 1e9)  # only the first epoch is written
    original = monitor.EpochMonitor.on_train_batch_end

    def interrupt_in_third_epoch(self, batch, logs=None):
        original(self, batch, logs)
        if len(self.history) == 2 and batch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(monitor.EpochMonitor, "on_train_batch_end", interrupt_in_third_epoch)
    result = train(synth_dir, tmp_path, _config(epochs=5), progress=False)
    assert result.state.interrupted and result.state.epochs_done == 2
    assert _epochs(result.run_dir) == [1, 2]
    steps = len(read_labels_file(result.run_dir / "train.csv")) // result.config.batch_size
    last = load_keras_model(result.run_dir / "last.keras", compile=True)
    assert int(last.optimizer.iterations.numpy()) == 2 * steps  # not 2 * steps + 2


def test_resume_refuses_a_run_with_missing_files(synth_dir: Path, tmp_path: Path) -> None:
    from captcha_ocr.train import train

    result = train(synth_dir, tmp_path, _config(epochs=1), progress=False)
    broken = tmp_path / "broken"
    shutil.copytree(result.run_dir, broken)
    (broken / "last.keras").unlink()
    with pytest.raises(CaptchaOCRError, match=r"last\.keras is missing"):
        train(None, tmp_path, resume=broken, resume_epochs=3)
    with pytest.raises(CaptchaOCRError, match="already ran"):
        train(None, tmp_path, resume=result.run_dir)


def test_unwritable_run_folder_is_detected_before_training(synth_dir: Path, tmp_path: Path) -> None:
    from captcha_ocr.train import train

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(CaptchaOCRError, match="cannot write"):
        train(synth_dir, blocker / "runs", _config())


@pytest.mark.parametrize(
    "images, epochs",
    [
        (20, 1800),
        (100, 600),
        (180, 360),
        (936, 63),
        (1800, 60),
        (5000, 60),
        (30_000, 22),
        (100_000, 15),
    ],
)
def test_default_budget_scales_with_the_data(images: int, epochs: int) -> None:
    from captcha_ocr.epochs import AUTO_STEPS_RANGE, auto_epochs

    assert auto_epochs(images, 32) == epochs
    steps = epochs * max(1, images // 32)
    if 15 < epochs < 2000:  # inside the epoch range the step bounds hold
        assert AUTO_STEPS_RANGE[0] <= steps <= AUTO_STEPS_RANGE[1] + images // 32


class _ScriptedMonitor:
    """An EpochMonitor whose validation scores come from a script, not a model."""

    @staticmethod
    def make(
        tmp_path: Path,
        scores: list[tuple[float, float]],
        steps_per_epoch: int,
        patience: int,
        **settings: object,
    ):
        from captcha_ocr.config import ModelSpec
        from captcha_ocr.data import Sample
        from captcha_ocr.feed import PreparedData
        from captcha_ocr.fit import CTCLoss, make_optimizer
        from captcha_ocr.model import build_model
        from captcha_ocr.monitor import EpochMonitor
        from captcha_ocr.runfolder import RunState

        spec = ModelSpec("tiny", "ab", height=16, width=32, channels=1, max_label_length=2)
        # ema off: no steps to average
        config = _config(**{"epochs": 1000, "patience": patience, "ema": False, **settings})
        images = np.zeros((1, 16, 32, 1), np.uint8)
        labels = np.ones((1, 2), np.int32)
        samples = [Sample("x.png", "ab")]
        data = PreparedData(spec, samples, samples, images, images, labels, labels)
        model = build_model(spec)
        model.compile(optimizer=make_optimizer(config, 1000), loss=CTCLoss())
        script = iter(scores)

        class Monitor(EpochMonitor):
            def validate(self):
                loss, cer = next(script)
                return {"val_loss": loss, "val_cer": cer, "val_wer": cer, "val_acc": 1.0 - cer}

        monitor = Monitor(data, config, tmp_path, RunState(), [], steps_per_epoch, False)
        monitor.set_model(model)
        monitor.on_train_begin()
        return monitor, model


def _epochs_until_stop(monitor, model, count: int) -> int | None:
    for epoch in range(count):
        monitor.on_epoch_end(epoch, {"loss": 1.0})
        if model.stop_training:
            return epoch + 1
    return None


def test_early_stopping_waits_while_ctc_is_on_the_blank_plateau(tmp_path: Path) -> None:
    # 30 epochs at CER 1 with a rising validation loss (as on the plateau), then learning.
    scores = (
        [(10.0 + k, 1.0) for k in range(30)] + [(5.0, 0.5)] + [(6.0 + k, 0.5) for k in range(9)]
    )
    monitor, model = _ScriptedMonitor.make(tmp_path, scores, steps_per_epoch=100, patience=3)
    assert monitor.patience_epochs() == 4  # 400 steps at least: 4 epochs of 100
    assert _epochs_until_stop(monitor, model, len(scores)) == 35  # 4 epochs after epoch 31
    assert "early stop" in monitor.state.stop_reason and monitor.state.record_epoch == 31


def test_patience_is_at_least_400_steps_on_small_sets(tmp_path: Path) -> None:
    scores = [(1.0, 0.5)] + [(2.0, 0.5)] * 100
    monitor, model = _ScriptedMonitor.make(tmp_path, scores, steps_per_epoch=5, patience=40)
    assert monitor.patience_epochs() == 80
    assert _epochs_until_stop(monitor, model, len(scores)) == 81


def test_the_budget_shrinks_to_end_within_the_time_limit(tmp_path: Path) -> None:
    """Epochs of 10 s against a limit of 105 s: after two epochs the budget of 1,000 epochs
    becomes 10 (the learning-rate schedule with it), and the run ends there, its schedule done,
    before the limit would cut it."""
    import time

    from captcha_ocr.epochs import cosine_learning_rate
    from captcha_ocr.runfolder import RunState

    scores = [(10.0 - k, 0.5) for k in range(20)]
    monitor, model = _ScriptedMonitor.make(
        tmp_path, scores, steps_per_epoch=5, patience=100, time_limit=105.0
    )
    for epoch in range(20):
        monitor.started = time.perf_counter() - 10.0 * (epoch + 1)  # epoch k ends at 10k s
        monitor.on_epoch_end(epoch, {"loss": 1.0})
        assert monitor.state.epochs_fitted == (0 if epoch == 0 else 10)
        if model.stop_training:
            break
    assert epoch + 1 == 10 and "fitted to the time limit of 105 s" in monitor.state.stop_reason
    assert RunState.load(tmp_path).epochs_fitted == 10  # a resumed run keeps the fitted budget
    peak, last_step = monitor.config.learning_rate, 10 * 5 - 1
    assert cosine_learning_rate(monitor.config, last_step, 5, epochs=10) < 0.02 * peak
    assert cosine_learning_rate(monitor.config, last_step, 5) > 0.9 * peak  # 1,000 epochs


def test_an_extended_budget_trains_past_the_configured_epochs(
    synth_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the verdict grows the budget (epochs.extension), the loop and the batch feed go on
    past config.epochs, the files follow, and the stop reason says why it ran longer."""
    from captcha_ocr import epochs
    from captcha_ocr.train import train

    def two_more_at_the_end(state, history, config):
        return 2 if state.epochs_done == config.epochs and not state.epochs_extended else 0

    monkeypatch.setattr(epochs, "extension", two_more_at_the_end)
    result = train(synth_dir, tmp_path, _config(epochs=2, min_accuracy=0.0), progress=False)
    assert _epochs(result.run_dir) == [1, 2, 3, 4]
    assert result.state.epochs_done == 4 and result.state.epochs_extended == 2
    assert "extended by 2" in result.state.stop_reason
    assert result.config.epochs == 2  # the configured budget is kept as given


def test_a_saturated_run_ends_early_with_its_schedule_compressed(
    synth_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the verdict shortens the budget (epochs.shortening), the run ends there, its
    learning rate decayed to the floor by then, and the stop reason says why it ran shorter."""
    from captcha_ocr import epochs
    from captcha_ocr.train import train

    def three_epochs_at_the_second(state, history, config, val_images):
        assert val_images > 0  # the monitor passes its validation set's size
        return 3 if state.epochs_done == 2 else None

    monkeypatch.setattr(epochs, "shortening", three_epochs_at_the_second)
    config = _config(epochs=8, min_accuracy=0.0, warmup_epochs=0.0)
    result = train(synth_dir, tmp_path, config, progress=False)
    assert _epochs(result.run_dir) == [1, 2, 3]
    assert result.state.saturated_at == 2 and result.state.epochs_fitted == 3
    assert "saturated at epoch 2" in result.state.stop_reason
    rates = [row["lr"] for row in result.history]
    assert rates[2] < 0.5 * rates[1]  # the third epoch runs on the compressed schedule


def test_the_automatic_budget_is_bounded_in_time_and_an_explicit_one_is_not(
    synth_dir: Path,
) -> None:
    from captcha_ocr.config import TrainConfig
    from captcha_ocr.epochs import auto_time_limit
    from captcha_ocr.train import _planned_run

    run = _planned_run(synth_dir, TrainConfig(init="none"), None)
    assert run.config.time_limit == auto_time_limit(len(run.train_samples)) == 600.0
    assert (
        _planned_run(synth_dir, TrainConfig(init="none", epochs=3), None).config.time_limit
        == "none"
    )
    mine = TrainConfig(init="none", time_limit=60.0)
    assert _planned_run(synth_dir, mine, None).config.time_limit == 60.0
    # Likewise the extension of a budget that ends while validation still improves.
    assert _planned_run(synth_dir, TrainConfig(init="none"), None).config.extend == "auto"
    explicit = _planned_run(synth_dir, TrainConfig(init="none", epochs=3), None)
    assert explicit.config.extend == "none"
    # And the shortening of one whose validation is saturated.
    assert _planned_run(synth_dir, TrainConfig(init="none"), None).config.shorten == "auto"
    assert explicit.config.shorten == "none"


def _interrupt_pretraining(monkeypatch: pytest.MonkeyPatch, hook: str) -> None:
    """Ctrl-C inside the pre-training, right after ``EpochMonitor.<hook>`` ran: after its
    first epoch's files are saved (on_epoch_end), or in its first batch (on_train_batch_end)."""
    from captcha_ocr.monitor import EpochMonitor

    original = getattr(EpochMonitor, hook)

    def interrupt(self, index, logs=None):
        original(self, index, logs)
        if self.run_dir.name == "pretrain":
            raise KeyboardInterrupt

    monkeypatch.setattr(EpochMonitor, hook, interrupt)


def test_ctrl_c_during_pretraining_stops_the_run_and_resume_goes_on(
    synth_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from captcha_ocr.train import train

    config = _config(epochs=1, pretrain="synth", pretrain_images=40, pretrain_epochs=2)
    _interrupt_pretraining(monkeypatch, "on_epoch_end")
    with pytest.raises(KeyboardInterrupt):
        train(synth_dir, tmp_path, config, progress=False)
    monkeypatch.undo()
    run = (tmp_path / "latest").resolve()
    assert _epochs(run / "pretrain") == [1]
    assert not (run / "history.csv").exists()  # no fine-tuning after Ctrl-C

    resumed = train(None, tmp_path, resume=run, progress=False)
    assert _epochs(run / "pretrain") == [1, 2]  # the pre-training went on, then fine-tuning
    assert _epochs(run) == [1] and "budget" in resumed.state.stop_reason


def test_ctrl_c_before_the_first_pretraining_epoch_ends(
    synth_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from captcha_ocr.cli import main

    argv = ["train", str(synth_dir), "--out", str(tmp_path), "--preset", "tiny", "--quiet"]
    argv += ["--epochs", "1", "--pretrain", "synth", "--pretrain-images", "40"]
    argv += ["--pretrain-epochs", "1", "--seed", "1"]
    _interrupt_pretraining(monkeypatch, "on_train_batch_end")
    assert main(argv) == 130  # an interrupted run, not an error
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert "nothing to keep" not in err and "Traceback" not in err
    run = (tmp_path / "latest").resolve()
    assert f"captcha-ocr train --resume {run}" in err
    assert not (run / "pretrain" / "model.keras").exists()

    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert _epochs(run / "pretrain") == [1] and _epochs(run) == [1]
    assert (run / "model.onnx").is_file()


def test_train_scans_the_data_once(synth_dir: Path, tmp_path: Path, capsys) -> None:
    from captcha_ocr.cli import main

    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    shutil.copy(next(synth_dir.glob("*.png")), data / "zz-x.png")
    argv = ["train", str(data), "--out", str(tmp_path / "runs"), "--preset", "tiny"]
    argv += ["--label-pattern", r"^(?P<label>[a-d1-4]+)(?:_\d+)?$", "--width", "16"]
    assert main([*argv, "--height", "16", "--quiet"]) == 2  # labels too long: stops early
    err = capsys.readouterr().err
    assert "CTC steps" in err
    assert err.count("did not match the label pattern") == 1, err


def test_weight_average_is_validated_and_kept_and_raw_weights_resume(
    synth_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``ema`` the best checkpoint holds the moving average of the weights (the weights
    that were validated); last.keras holds the raw weights and the average (in its optimizer),
    so that a resumed run goes on averaging."""
    from captcha_ocr import train as train_module
    from captcha_ocr.model import load_keras_model

    # One epoch (so its checkpoint is the best one) of 11 steps, averaged over all of them.
    monkeypatch.setattr("captcha_ocr.epochs.EMA_HORIZON_SHARE", 1.0)
    result = train_module.train(synth_dir, tmp_path, _config(epochs=1, ema=True), progress=False)
    best = load_keras_model(result.run_dir / "model.keras")
    last = load_keras_model(result.run_dir / "last.keras", compile=True)
    average = [np.asarray(v) for v in last.optimizer._model_variables_moving_average]
    raw = [np.asarray(v) for v in last.trainable_variables]
    kept = [np.asarray(v) for v in best.trainable_variables]
    assert not all(np.allclose(a, r) for a, r in zip(average, raw))
    for a, k in zip(average, kept):
        np.testing.assert_allclose(a, k, rtol=1e-6, atol=1e-7)
    resumed = train_module.train(
        None, tmp_path, resume=result.run_dir, progress=False, resume_epochs=2
    )
    assert _epochs(resumed.run_dir) == [1, 2]
