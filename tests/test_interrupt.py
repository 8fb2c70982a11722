"""No work is lost: Ctrl-C mid-training keeps and exports the best model; --resume goes on;
a process killed while writing leaves the previous files intact."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from captcha_ocr import Reader


def _history(run_dir: Path) -> list[int]:
    path = run_dir / "history.csv"
    if not path.is_file():
        return []
    with open(path) as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def _sigint_as_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "captcha_ocr", *args]


@pytest.mark.slow
def test_sigint_mid_training_keeps_best_and_resume_continues(
    synth_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "runs"
    process = subprocess.Popen(
        _cli(
            "train",
            str(synth_dir),
            "--out",
            str(out),
            "--preset",
            "tiny",
            "--epochs",
            "300",
            "--quiet",
            "--seed",
            "2",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A runner that starts the tests as a background job hands SIGINT down as ignored;
        # the child must see Ctrl-C as a user's terminal would deliver it.
        preexec_fn=_sigint_as_default,
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and len(_history(out / "latest")) < 2:
            assert process.poll() is None, process.communicate()[1][-2000:]
            time.sleep(0.2)
        time.sleep(0.3)  # land inside an epoch, not between two
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr[-2000:]
    assert "interrupted" in stderr and "Traceback" not in stderr
    run = (out / "latest").resolve()
    done = _history(run)
    assert len(done) >= 2 and done == list(range(1, len(done) + 1))
    assert (run / "model.keras").is_file() and (run / "model.onnx").is_file()
    assert Reader.load(run).read(next(synth_dir.glob("*.png"))).text is not None

    target = len(done) + 2
    resumed = subprocess.run(
        _cli("train", "--resume", str(run), "--epochs", str(target), "--quiet"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _history(run) == list(range(1, target + 1))


@pytest.mark.slow
def test_sigkill_during_export_leaves_the_previous_model_intact(
    trained_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = (run / "model.onnx").read_bytes()
    reader_before = Reader.load(run)
    for delay in (1.0, 2.5, 4.0):
        process = subprocess.Popen(
            _cli("export", str(run)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(delay)
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
        # Whatever the moment of death: a complete model (the old one or a fresh export),
        # never a half-written file.
        reader = Reader.load(run)
        assert reader.spec == reader_before.spec
        assert reader.log_probs(np.zeros((1, 32, 100, 1), np.float32)).shape == (1, 25, 9)
    assert len(before) > 0


def _deliver_sigint_inside_deferred_block(events: list[str]) -> list[str]:
    from captcha_ocr.monitor import interrupts_deferred

    with interrupts_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs between bytecodes; give it the chance
        events.append("block finished")
    events.append("after block")
    return events


def test_ctrl_c_inside_a_deferred_block_is_raised_after_it() -> None:
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    events: list[str] = []
    try:
        with pytest.raises(KeyboardInterrupt):
            _deliver_sigint_inside_deferred_block(events)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert events == ["block finished"]  # the block ran to its end, then KeyboardInterrupt


def test_an_inherited_ignored_sigint_stays_ignored() -> None:
    # nohup / a background job: SIGINT is ignored before Python starts, and must stay so.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert _deliver_sigint_inside_deferred_block([]) == ["block finished", "after block"]
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
