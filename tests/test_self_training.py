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
    # The part column is read as the rows are: a TSV with a header in capitals.
    tsv = tmp_path / "labels.tsv"
    tsv.write_text("Path\tLabel\tPart\na.png\tx\tVAL\nb.png\ty\tval\nc.png\tz\t\n")
    with pytest.raises(CaptchaOCRError, match="'VAL'; give train or val"):
        split_as_marked(read_labels_file(tsv), tsv)
    tsv.write_text("Path\tLabel\tPart\na.png\tx\ttrain\nb.png\ty\tval\n")
    assert [s.label for s in split_as_marked(read_labels_file(tsv), tsv)[1]] == ["y"]


def test_self_training_flags_are_checked_before_training(
    labels_and_unlabeled, tmp_path: Path, capsys
) -> None:
    labels, unlabeled = labels_and_unlabeled
    argv = ["train", labels, "--out", tmp_path / "runs", "--unlabeled"]
    fails([*argv, tmp_path / "nowhere"], capsys, "does not exist")
    fails([*argv, unlabeled, "--rounds", "0"], capsys, "--rounds 0", "1 or more")
    fails([*argv, unlabeled, "--pseudo-min-confidence", "2"], capsys, "--pseudo-min-confidence")
    fails(["train", "--resume", tmp_path, "--unlabeled", unlabeled], capsys, "--unlabeled")
    fails(["train", labels, "--rounds", "3"], capsys, "--rounds only apply with --unlabeled")
    labeled_image = read_labels_file(labels)[0].path
    fails([*argv, labeled_image], capsys, "every image of --unlabeled (1) is labeled")
    assert not (tmp_path / "runs").exists()
    stdout, _ = succeeds([*argv, unlabeled, "--dry-run"], capsys)
    assert "self-training: 2 more round(s)" in stdout and "140 unlabeled image(s)" in stdout


@pytest.mark.slow
def test_train_unlabeled_trains_rounds_on_the_labels_and_the_last_reads(
    labels_and_unlabeled, tmp_path: Path, capsys, monkeypatch
) -> None:
    labels, unlabeled = labels_and_unlabeled
    before = _digests(unlabeled)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "runs"
    argv = ["train", labels, "--out", "runs", "--init", "base", "--epochs", "1", "--seed", "1",
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
    latest = Path("runs") / (out / "latest").resolve().name  # as --out was given
    assert len(best) == 1 and f"round {runs.index(out / latest.name) + 1}: {latest} " in best[0]
    assert f"run folder: {latest}\n" in stdout
    assert _digests(unlabeled) == before  # the user's images are never changed
    # From any working folder, the last round knows which of its labels were reads.
    from captcha_ocr.pseudo_labels import pseudo_labeled_paths

    monkeypatch.chdir(unlabeled)
    assert len(pseudo_labeled_paths(runs[-1])) == len(pseudo)


def _fake_round(run_dir: Path, val_wer: float, interrupted: bool = False, not_usable: str = ""):
    from types import SimpleNamespace

    from captcha_ocr.config import TrainConfig

    run_dir.mkdir(parents=True)
    state = SimpleNamespace(interrupted=interrupted)
    return SimpleNamespace(run_dir=run_dir, best={"val_wer": val_wer}, state=state,
                           not_usable=not_usable, config=TrainConfig())  # fmt: skip


@pytest.mark.parametrize(
    ("second", "third", "trainings", "trained", "best"),
    [
        ({"val_wer": 0.1}, {"val_wer": 0.2}, 2, 2, 2),  # the best round ends as latest
        ({"val_wer": 0.3, "interrupted": True}, {"val_wer": 0.0}, 1, 1, 1),  # Ctrl-C: no more
        ({"val_wer": 0.9, "not_usable": "0 %"}, {"val_wer": 0.0}, 1, 1, 1),  # did not learn
        ({"val_wer": 0.0}, CaptchaOCRError("no best.keras"), 2, 1, 2),  # a round fails
        ({"val_wer": 0.0}, KeyboardInterrupt(), 2, 1, 2),  # Ctrl-C before a round's epoch
        ("no reads", None, 0, 0, 1),  # nothing kept: no round to train
    ],
)
def test_self_train_stops_where_a_round_cannot_go_on(
    tmp_path: Path, monkeypatch, second, third, trainings: int, trained: int, best: int
) -> None:
    """The loop alone (training, export and reads faked): it trains while rounds learn, keeps
    the rounds done when one fails or is interrupted, and ``latest`` points at the round that
    reads the shared validation images best."""
    from types import SimpleNamespace

    from captcha_ocr import self_training
    from captcha_ocr.config import TrainConfig

    out = tmp_path / "runs"
    results = [_fake_round(out / f"r{n}", **case) if isinstance(case, dict) else case
               for n, case in ((2, second), (3, third))]  # fmt: skip
    calls = []

    def train(data, out_dir, config, progress):
        calls.append(data)
        result = results[len(calls) - 1]
        if isinstance(result, BaseException):
            raise result
        return result

    monkeypatch.setattr(self_training, "train", train)
    monkeypatch.setattr(self_training, "export_run", lambda run_dir: None)
    kept = [] if second == "no reads" else [("x.png", "ab", 0.9)]
    reads = SimpleNamespace(kept=kept, labels=10, describe=lambda: "read 1")
    monkeypatch.setattr(self_training, "pseudo_label", lambda *a, **k: reads)
    monkeypatch.setattr(self_training, "write_pseudo_csv", lambda result, path: path)
    first = _fake_round(out / "r1", 0.25)
    (out / "latest").symlink_to(tmp_path)  # where a failed round's training left it
    rounds = self_training.self_train(first, ["x.png"], out, TrainConfig(), 2, 0.3, False)
    assert len(calls) == trainings and calls[:1] in ([], [out / "r1" / "pseudo_labels.csv"])
    assert [r.number for r in rounds] == list(range(1, trained + 2))
    assert (out / "latest").resolve() == rounds[best - 1].result.run_dir
    args = ([], out, TrainConfig(), 2, 0.3)
    with pytest.raises(CaptchaOCRError, match="interrupted"):
        self_training.self_train(_fake_round(tmp_path / "i", 0.1, interrupted=True), *args)
    with pytest.raises(CaptchaOCRError, match="did not learn"):
        self_training.self_train(_fake_round(tmp_path / "n", 0.9, not_usable="x"), *args)


def test_rounds_start_as_the_rescued_first_run_did() -> None:
    from captcha_ocr.config import TrainConfig
    from captcha_ocr.self_training import carry_rescue

    asked = TrainConfig(seed=4)
    assert carry_rescue(asked, asked) == asked  # not rescued
    rescued = TrainConfig(seed=5, pretrain="synth", rescue=False)
    assert (carry_rescue(rescued, asked).seed, carry_rescue(rescued, asked).pretrain) == (
        5,
        "synth",
    )
    assert carry_rescue(rescued, asked).rescue  # a round may still be rescued itself
