"""Robustness of ``captcha-ocr train``: bad files among good ones are skipped and reported,
what cannot work is refused before training, an edited or damaged run folder is refused by
``--resume``, and no work is ever lost.

The bad inputs are made on the fly in ``tmp_path`` by the factories of tests/bad_inputs.py,
whose docstring says what a right answer is and what "the 8 unreadable kinds" and "the 5 odd
kinds" are.

Keras files load in safe mode (a ``Lambda`` layer in model.keras is refused by
``load_best_model`` and ``export``, and in last.keras by ``--resume``, without running it);
configs are parsed as data (a ``!!python`` tag is never run).

Covered here ("elsewhere": in another test module, not repeated here):

============ ===== ==========================================================================
entry point  count bad inputs
============ ===== ==========================================================================
``train``    38    the 8 unreadable kinds among good files (skipped, counted); the 5 odd kinds,
                   a unicode file name, duplicate labels (used); a non-UTF-8 file name
                   (skipped, reported); a label with a space (warned); a folder of only
                   unreadable files, without and with readable headers; only non-UTF-8 file
                   names; a label longer than the model can encode; --strict with one bad
                   file; a labels CSV that is not UTF-8; a full disk; --out that is (or is
                   under) a file; --resume with configs.yaml missing, with a !!python tag (not
                   run), an unknown key, a wrong type, an impossible value, a repeated charset
                   character, bad channels, not a mapping, not UTF-8, empty; a damaged
                   last.keras; a last.keras with a Lambda layer (refused in safe mode, not
                   run); a damaged state.json. Elsewhere: empty folder, unknown config key,
                   unwritable run folder (library)
============ ===== ==========================================================================
"""

from __future__ import annotations

import collections
import dataclasses
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captcha_ocr.config import ModelSpec, TrainConfig, save_run_config
from captcha_ocr.data import Sample, write_samples_csv
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.infer import Prediction, Reader
from tests.bad_inputs import HEIGHT, NON_UTF8_NAME, TWINS, UNREADABLE, WIDTH
from tests.helpers import CHARSET, SPEC, STEPS, fails, skipped_count, succeeds, write


def copy_synth(synth_dir: Path, folder: Path, count: int = 40) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(p, folder)) for p in sorted(synth_dir.glob("*.png"))[:count]]


def train_argv(data: Path, out: Path, *extra: str) -> list:
    return ["train", data, "--out", out, "--preset", "tiny", "--epochs", "1", "--quiet", *extra]


@pytest.mark.slow
def test_train_skips_and_reports_bad_files_among_good_and_uses_odd_ones(
    synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = tmp_path / "data"
    good = copy_synth(synth_dir, data)
    label = good[0].stem.split("_")[0]
    picture = np.asarray(Image.open(good[0]).convert("L"))
    for i, kind in enumerate(UNREADABLE):
        bytes_, suffix = UNREADABLE[kind]()
        write(data / f"{label}_{100 + i}{suffix}", bytes_)
    odd = [
        write(data / f"{label}_{200 + i}{suffix}", make(picture)[0])
        for i, (make, suffix) in enumerate(TWINS.values())
    ]
    other = good[1].stem.split("_")[0]
    odd.append(Path(shutil.copy(good[1], data / f"ä{other}.png")))  # unicode name
    odd.append(Path(shutil.copy(good[1], data / f"{other}_300.png")))  # duplicate label
    odd.append(Path(shutil.copy(good[2], data / "ab 12.png")))  # a space
    write(data / NON_UTF8_NAME, good[3].read_bytes())

    _, err = succeeds(train_argv(data, tmp_path / "runs", "--seed", "1"), capsys)
    training = err.split("exporting the best model")[0]  # export reports the val ones again
    assert skipped_count(training) == len(UNREADABLE), err[-3000:]
    assert "not valid UTF-8 and were skipped" in err and "contain spaces" in err
    run = (tmp_path / "runs" / "latest").resolve()
    used = {
        Path(row.split(",")[0]).name
        for name in ("train.csv", "val.csv")
        for row in (run / name).read_text(encoding="utf-8").splitlines()[1:]
    }
    assert {p.name for p in odd} <= used and NON_UTF8_NAME not in used
    reader = Reader.load(run)
    assert "ä" in reader.spec.charset and " " in reader.spec.charset
    assert isinstance(reader.read(odd[0]), Prediction)


@pytest.mark.slow
def test_train_refuses_a_folder_of_only_unreadable_files(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    no_header = tmp_path / "no_header"
    for i, data in enumerate([b"", b"hello", b"<html>"]):
        write(no_header / f"ab{i}.png", data)
    runs = tmp_path / "runs"
    fails(train_argv(no_header, runs), capsys, "none of the images could be read", "are images")
    truncated = tmp_path / "truncated"
    for i, kind in enumerate(["truncated PNG", "truncated JPEG", "LAB TIFF"]):
        data, suffix = UNREADABLE[kind]()
        write(truncated / f"ab{i}{suffix}", data)
    write(truncated / "ab9.png", b"")
    fails(train_argv(truncated, runs), capsys, "none of the", "could be read", "are images")
    assert not list(runs.rglob("*.keras")) and not list(runs.rglob("*.onnx"))


@pytest.mark.slow
def test_train_refuses_before_training(
    synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = tmp_path / "data"
    good = copy_synth(synth_dir, data)
    runs = tmp_path / "runs"
    # 26 characters need 26 CTC steps; the tiny preset at width 100 has 25.
    long_label = write(data / "abcd1234abcd1234abcd1234ab.png", good[0].read_bytes())
    fails(train_argv(data, runs), capsys, "needs 26 CTC steps", "gives 25", "--width")
    assert not runs.exists() or not list(runs.iterdir())
    long_label.unlink()

    write(data / "ab1_99.png", b"")
    fails(train_argv(data, runs, "--strict"), capsys, "could not be read", "drop --strict")
    assert not list(runs.rglob("*.keras"))

    only_bad_names = tmp_path / "names"
    write(only_bad_names / NON_UTF8_NAME, b"")
    fails(train_argv(only_bad_names, runs), capsys, "not valid UTF-8", "rename")

    latin1 = tmp_path / "labels.csv"
    latin1.write_bytes("path,label\ndonnées.png,ab12\n".encode("latin-1"))
    fails(train_argv(latin1, runs), capsys, "not UTF-8")


@pytest.mark.slow
def test_train_detects_a_full_disk_or_an_unwritable_run_folder_first(
    synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from captcha_ocr import runfolder

    data = tmp_path / "data"
    copy_synth(synth_dir, data)
    blocker = write(tmp_path / "file", b"not a folder")
    fails(train_argv(data, blocker), capsys, "cannot write to", "choose another --out")
    fails(train_argv(data, blocker / "runs"), capsys, "cannot write to", "choose another --out")

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(runfolder.shutil, "disk_usage", lambda _: usage(10**9, 0, 2_000_000))
    runs = tmp_path / "runs"
    fails(train_argv(data, runs), capsys, "only 2 MB free", "free some space")
    assert list(runs.iterdir()) == []  # no run folder, no file written


def fake_run(folder: Path, synth_dir: Path, **train_changes) -> Path:
    """A run folder as training leaves it, without the training: configs, split, state."""
    samples = [Sample(str(p), p.stem.split("_")[0]) for p in sorted(synth_dir.glob("*.png"))]
    config = dataclasses.replace(TrainConfig(preset="tiny", epochs=3), **train_changes)
    spec = ModelSpec("tiny", CHARSET, 32, 100, 1, max(len(s.label) for s in samples))
    save_run_config(folder, spec, config, {"source": str(synth_dir)})
    write_samples_csv(folder / "train.csv", samples[:24])
    write_samples_csv(folder / "val.csv", samples[24:32])
    write(folder / "last.keras", b"PK\x03\x04 not really a keras file")
    return folder


def _edit(run: Path, transform: Callable[[str], str]) -> None:
    path = run / "configs.yaml"
    path.write_text(transform(path.read_text(encoding="utf-8")), encoding="utf-8")


# name -> (edit the run folder, words the error must hold)
EDITED_RUNS: dict[str, tuple[Callable[[Path], object], tuple[str, ...]]] = {
    "configs.yaml missing": (lambda r: (r / "configs.yaml").unlink(), ("configs.yaml is missing",)),
    "!!python tag": (
        lambda r: (r / "configs.yaml").write_text(
            f'model: !!python/object/apply:os.system ["touch {r / "ran"}"]\ntrain: {{}}\n'
        ),
        ("not valid YAML",),
    ),
    "unknown key": (
        lambda r: _edit(r, lambda t: t.replace("train:\n", "train:\n  learnin_rate: 0.1\n")),
        ("train.learnin_rate", "edited by hand"),
    ),
    "wrong type": (
        lambda r: _edit(r, lambda t: re.sub(r"batch_size: \d+", "batch_size: big", t)),
        ("train.batch_size", "must be int"),
    ),
    "impossible value": (
        lambda r: _edit(r, lambda t: re.sub(r"batch_size: \d+", "batch_size: 0", t)),
        ("batch_size must be >= 1", "edited by hand"),
    ),
    "charset repeats a char": (
        lambda r: _edit(r, lambda t: t.replace(f"charset: {CHARSET}", "charset: abcd1234a")),
        ("repeats a character", "edited by hand"),
    ),
    "3 -> 2 channels": (
        lambda r: _edit(r, lambda t: t.replace("channels: 1", "channels: 2", 1)),
        ("channels must be 1 or 3",),
    ),
    "not a mapping": (
        lambda r: (r / "configs.yaml").write_text("- model\n- train\n"),
        ("mapping",),
    ),
    "not UTF-8": (
        lambda r: (r / "configs.yaml").write_bytes(b"model: \xff\xfe\n"),
        ("not valid YAML",),
    ),
    "empty": (lambda r: (r / "configs.yaml").write_text(""), ("no 'model' section",)),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", EDITED_RUNS)
def test_train_resume_refuses_an_edited_run_folder(
    kind: str, synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = fake_run(tmp_path / "run", synth_dir)
    edit, words = EDITED_RUNS[kind]
    edit(run)
    fails(["train", "--resume", run, "--quiet"], capsys, *words)
    assert not (run / "ran").exists() and not (run / "model.keras").exists()


def lambda_model(marker: Path):
    """A Keras model whose Lambda layer touches ``marker`` whenever it is run or rebuilt."""
    import keras

    touch = eval(f"lambda x: (__import__('pathlib').Path({str(marker)!r}).touch(), x)[1]")
    inputs = keras.Input((HEIGHT, WIDTH, 1))
    outputs = keras.layers.Reshape((STEPS, 4 * HEIGHT))(keras.layers.Lambda(touch)(inputs))
    return keras.Model(inputs, keras.layers.Dense(SPEC.num_classes)(outputs))


@pytest.mark.slow
def test_keras_files_load_in_safe_mode_only(
    synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from captcha_ocr.model import load_best_model

    marker = tmp_path / "ran"
    run = fake_run(tmp_path / "run", synth_dir)
    model = lambda_model(marker)
    model.save(run / "model.keras")
    model.save(run / "code.keras")
    assert marker.exists()  # building the model ran the code; loading it must not
    marker.unlink()
    with pytest.raises(CaptchaOCRError, match="holds Python code") as info:
        load_best_model(run)
    assert "\n" not in str(info.value)
    fails(["export", run], capsys, "holds Python code")
    shutil.copy(run / "code.keras", run / "last.keras")
    fails(["train", "--resume", run, "--quiet"], capsys, "last.keras", "holds Python code")
    assert not marker.exists()


@pytest.mark.slow
def test_train_resume_refuses_a_damaged_checkpoint_or_state(
    synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = fake_run(tmp_path / "run", synth_dir)
    fails(["train", "--resume", run, "--quiet"], capsys, "last.keras cannot be loaded")
    (run / "state.json").write_text('{"epochs_done": "two"}')
    fails(["train", "--resume", run, "--quiet"], capsys, "state.json is damaged")
    (run / "state.json").write_text("[1, 2")
    fails(["train", "--resume", run, "--quiet"], capsys, "state.json is damaged")
