"""train --unlabeled: self-training rounds, each on the labels and the last run's surest reads."""

from __future__ import annotations

import csv
import hashlib
import itertools
import shutil
from pathlib import Path

import pytest

from captcha_ocr.config import load_yaml
from captcha_ocr.data import find_samples, read_labels_file, split_as_marked
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.runfolder import CONFIG_FILE, ONNX_FILE, VAL_CSV
from tests.helpers import fails, succeeds, write_labels_csv


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def labels_and_unlabeled(synth_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A labels file of 60 synthetic captchas, and the others under neutral names."""
    samples = find_samples(synth_dir)
    labels = write_labels_csv(tmp_path / "labels.csv", [(s.path, s.label) for s in samples[:60]])
    unlabeled = tmp_path / "unlabeled"
    unlabeled.mkdir()
    for k, sample in enumerate(samples[60:]):
        shutil.copy(sample.path, unlabeled / f"img{k:04d}.png")
    return labels, unlabeled


def test_split_as_marked_validates_on_the_rows_marked_val(tmp_path: Path) -> None:
    rows = [("a.png", "x", "train"), ("b.png", "y", "val"), (str(tmp_path / "c.png"), "z", "")]
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as handle:
        csv.writer(handle).writerows([("path", "label", "part"), *rows])
    samples = read_labels_file(labels)
    train, val = split_as_marked(samples, labels)
    assert [s.label for s in train] == ["x", "z"] and [s.label for s in val] == ["y"]
    # No val row, no part column, or a folder: the seeded split decides.
    write_labels_csv(labels, [(p, label) for p, label, _ in rows])
    assert split_as_marked(read_labels_file(labels), labels) is None
    assert split_as_marked(samples, tmp_path) is None
    with open(labels, "w", newline="") as handle:
        csv.writer(handle).writerows([("path", "label", "part"), ("a.png", "x", "val")])
    with pytest.raises(CaptchaOCRError, match="nothing left to train on"):
        split_as_marked(read_labels_file(labels), labels)


def test_self_training_flags_are_checked_before_training(
    labels_and_unlabeled, tmp_path: Path, capsys
) -> None:
    labels, unlabeled = labels_and_unlabeled
    argv = ["train", labels, "--out", tmp_path / "runs", "--unlabeled"]
    fails([*argv, tmp_path / "nowhere"], capsys, "does not exist")
    fails([*argv, unlabeled, "--rounds", "0"], capsys, "--rounds 0", "1 or more")
    fails([*argv, unlabeled, "--pseudo-min-confidence", "2"], capsys, "--pseudo-min-confidence")
    fails(["train", "--resume", tmp_path, "--unlabeled", unlabeled], capsys, "--unlabeled")
    assert not (tmp_path / "runs").exists()
    stdout, _ = succeeds([*argv, unlabeled, "--dry-run"], capsys)
    assert "self-training: 2 more round(s)" in stdout and "140 unlabeled image(s)" in stdout


@pytest.mark.slow
def test_train_unlabeled_trains_rounds_on_the_labels_and_the_last_reads(
    labels_and_unlabeled, tmp_path: Path, capsys
) -> None:
    labels, unlabeled = labels_and_unlabeled
    before = _digests(unlabeled)
    out = tmp_path / "runs"
    argv = ["train", labels, "--out", out, "--init", "base", "--epochs", "1", "--seed", "1",
            "--min-accuracy", "0", "--no-rescue", "--quiet", "--unlabeled", unlabeled,
            "--pseudo-min-confidence", "0"]  # fmt: skip
    stdout, _ = succeeds(argv, capsys)
    runs = sorted(p for p in out.iterdir() if p.name != "latest")
    assert len(runs) == 3, runs  # the first training and two rounds (the default)
    first_val = [s.path for s in read_labels_file(runs[0] / VAL_CSV)]
    for previous, run in itertools.pairwise(runs):
        labels_file = previous / "pseudo_labels.csv"
        rows = _rows(labels_file)
        person = [r for r in rows if r["source"] == "labeled"]
        pseudo = [r for r in rows if r["source"] == "pseudo"]
        # The person's 60 labels each round (an earlier round's reads are read anew), and
        # the reads of the unlabeled images, never validation.
        assert len(person) == 60 and pseudo
        assert {Path(r["path"]).parent for r in pseudo} == {unlabeled.resolve()}
        assert {r["part"] for r in pseudo} == {"train"}
        assert [r["path"] for r in person if r["part"] == "val"] == first_val
        # Every round validates on the first run's validation images, and says what it read.
        assert [s.path for s in read_labels_file(run / VAL_CSV)] == first_val
        assert load_yaml(run / CONFIG_FILE)["data"]["source"] == str(labels_file)
        assert (run / ONNX_FILE).is_file()
    lines = [line for line in stdout.splitlines() if line.startswith("round ")]
    assert len(lines) == 3 and "validation accuracy" in lines[2]
    best = [line for line in lines if "<- best (latest)" in line]
    assert len(best) == 1 and str((out / "latest").resolve()) in best[0]
    assert f"run folder: {(out / 'latest').resolve()}" in stdout
    assert _digests(unlabeled) == before  # the user's images are never changed


def _fake_round(run_dir: Path, val_wer: float, interrupted: bool = False, not_usable: str = ""):
    from types import SimpleNamespace

    run_dir.mkdir(parents=True)
    state = SimpleNamespace(interrupted=interrupted)
    return SimpleNamespace(run_dir=run_dir, best={"val_wer": val_wer}, state=state,
                           not_usable=not_usable)  # fmt: skip


@pytest.mark.parametrize(
    ("second", "third", "trained", "best"),
    [
        ({"val_wer": 0.1}, {"val_wer": 0.2}, 2, 2),  # the best round ends as latest
        ({"val_wer": 0.3, "interrupted": True}, {"val_wer": 0.0}, 1, 1),  # Ctrl-C: no more
        ({"val_wer": 0.9, "not_usable": "0 %"}, {"val_wer": 0.0}, 1, 1),  # did not learn
    ],
)
def test_self_train_stops_at_an_interrupted_or_unusable_round(
    tmp_path: Path, monkeypatch, second: dict, third: dict, trained: int, best: int
) -> None:
    """The loop alone (training, export and reads faked): it trains while rounds learn, and
    ``latest`` points at the round that reads the shared validation images best."""
    from types import SimpleNamespace

    from captcha_ocr import self_training

    out = tmp_path / "runs"
    results = iter([_fake_round(out / "r2", **second), _fake_round(out / "r3", **third)])
    calls = []
    monkeypatch.setattr(self_training, "train", lambda data, *a, **k: calls.append(data) or next(results))  # fmt: skip
    monkeypatch.setattr(self_training, "export_run", lambda run_dir: None)
    reads = SimpleNamespace(kept=[("x.png", "ab", 0.9)], labels=10, describe=lambda: "read 1")
    monkeypatch.setattr(self_training, "pseudo_label", lambda *a, **k: reads)
    monkeypatch.setattr(self_training, "write_pseudo_csv", lambda result, path: path)
    first = _fake_round(out / "r1", 0.25)
    rounds = self_training.self_train(first, ["x.png"], out, None, 2, 0.3, progress=False)
    assert len(calls) == trained and calls[0] == out / "r1" / "pseudo_labels.csv"
    assert [r.number for r in rounds] == list(range(1, trained + 2))
    assert (out / "latest").resolve() == rounds[best - 1].result.run_dir
    with pytest.raises(CaptchaOCRError, match="interrupted"):
        self_training.self_train(_fake_round(tmp_path / "i", 0.1, interrupted=True), [], out, None, 2, 0.3)  # fmt: skip
    with pytest.raises(CaptchaOCRError, match="did not learn"):
        self_training.self_train(_fake_round(tmp_path / "n", 0.9, not_usable="x"), [], out, None, 2, 0.3)  # fmt: skip
