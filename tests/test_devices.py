"""Multi-device training (``--devices``) on CPU with two logical devices.

TensorFlow's logical devices can only be set before it starts its runtime, which the other
tests in this process have done, so each check runs in a fresh Python process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from captcha_ocr.config import resolve_train_config
from captcha_ocr.errors import CaptchaOCRError

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "captcha_ocr", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )


def test_two_devices_take_half_a_batch_each_and_match_one_device() -> None:
    """Each device gets its own half of the batch, and the averaged step equals a one-device
    step on the whole batch (a network without BatchNorm, whose statistics are per device)."""
    result = run_python(
        """
        import numpy as np, keras
        from captcha_ocr.devices import distribution_strategy, split_batch, train_step

        strategy = distribution_strategy(2)
        assert strategy.num_replicas_in_sync == 2
        x = np.arange(10 * 3, dtype="float32").reshape(10, 3)
        shares = [np.asarray(v) for v in strategy.experimental_local_results(split_batch(strategy, x))]
        assert [s.shape for s in shares] == [(5, 3), (5, 3)], [s.shape for s in shares]
        assert np.array_equal(np.concatenate(shares), x)
        devices = [v.device for v in strategy.experimental_local_results(split_batch(strategy, x))]
        assert devices[0] != devices[1], devices

        def make():
            keras.utils.set_random_seed(0)
            model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4), keras.layers.Dense(1)])
            model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
            return model

        rng = np.random.default_rng(0)
        one = make()
        with strategy.scope():
            two = make()
        for _ in range(3):
            xb = rng.normal(size=(8, 6)).astype("float32")
            yb = rng.normal(size=(8, 1)).astype("float32")
            a, b = train_step(one, None, xb, yb), train_step(two, strategy, xb, yb)
            assert abs(a - b) < 1e-5, (a, b)
        diff = max(float(np.abs(p - q).max()) for p, q in zip(one.get_weights(), two.get_weights()))
        assert diff < 1e-5, diff
        print("ok", diff)
        """
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ok" in result.stdout


def test_train_on_two_devices_then_resume_on_one(synth_dir: Path, tmp_path: Path) -> None:
    result = run_cli(
        "train", str(synth_dir), "--out", str(tmp_path), "--preset", "tiny",
        "--epochs", "2", "--devices", "2", "--quiet", "--seed", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "data-parallel training on /cpu:0, /cpu:1" in result.stderr
    run_dir = (tmp_path / "latest").resolve()
    assert (run_dir / "model.onnx").is_file()
    assert "devices: 2" in (run_dir / "configs.yaml").read_text()

    resumed = run_cli(
        "train", "--resume", str(run_dir), "--epochs", "3", "--devices", "1", "--quiet"
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "data-parallel" not in resumed.stderr
    assert "devices: 1" in (run_dir / "configs.yaml").read_text()
    history = (run_dir / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["1", "2", "3"]

    predicted = run_cli("predict", str(run_dir), str(next(synth_dir.glob("*.png"))))
    assert predicted.returncode == 0, predicted.stderr[-3000:]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"devices": 0}, "devices must be >= 1"),
        ({"devices": 4, "batch_size": 2}, "batch_size must be at least devices"),
    ],
)
def test_bad_device_counts_are_refused(overrides: dict, message: str) -> None:
    with pytest.raises(CaptchaOCRError, match=message):
        resolve_train_config("default", cli_overrides=overrides)


def test_devices_after_tensorflow_started_is_a_clear_error() -> None:
    result = run_python(
        """
        import tensorflow as tf
        from captcha_ocr.errors import CaptchaOCRError
        from captcha_ocr.devices import distribution_strategy

        tf.constant(1.0)  # TensorFlow has started its devices: one CPU
        try:
            distribution_strategy(2)
        except CaptchaOCRError as error:
            print("refused:", error)
        """
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "train in a new process" in result.stdout


def test_more_devices_than_gpus_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import tensorflow as tf

    from captcha_ocr.devices import distribution_strategy

    real = tf.config.list_physical_devices
    monkeypatch.setattr(
        tf.config,
        "list_physical_devices",
        lambda kind=None: ["GPU:0"] if kind == "GPU" else real(kind),
    )
    with pytest.raises(CaptchaOCRError, match=r"has 1 GPU.*--devices 1 or fewer"):
        distribution_strategy(2)
