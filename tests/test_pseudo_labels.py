"""pseudo-label: a run's surest reads of unlabeled images, written beside its own labels."""

from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path

import pytest

from captcha_ocr.data import find_samples, read_labels_file
from captcha_ocr.infer import Reader
from tests.helpers import base_model_run, fails, succeeds


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


@pytest.fixture
def run_and_unlabeled(synth_dir: Path, tmp_path: Path) -> tuple[Path, Path, list]:
    """A base-model run labeled with a third of the synthetic captchas; the rest copied
    under neutral names into a folder of unlabeled images."""
    samples = find_samples(synth_dir)
    labeled, rest = samples[: len(samples) // 3], samples[len(samples) // 3 :]
    rows = [(s.path, s.label) for s in labeled]
    run = base_model_run(tmp_path / "run", rows[10:], rows[:10])
    unlabeled = tmp_path / "unlabeled"
    unlabeled.mkdir()
    for k, sample in enumerate(rest):
        shutil.copy(sample.path, unlabeled / f"img{k:04d}.png")
    return run, unlabeled, labeled


def test_pseudo_label_keeps_the_sure_reads_beside_the_run_labels(
    run_and_unlabeled, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run, unlabeled, labeled = run_and_unlabeled
    before = _digests(unlabeled)
    out = tmp_path / "out" / "labels.csv"
    # The labeled images given again are not read again: they have labels; an image named
    # twice (its folder and itself) is read once.
    first = sorted(unlabeled.iterdir())[0]
    argv = ["pseudo-label", run, unlabeled, labeled[0].path, first, "--out", out]
    stdout, _ = succeeds([*argv, "--min-confidence", "0.5"], capsys)
    assert "1 already labeled in the run" in stdout and "captcha-ocr train" in stdout
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    # The run's training labels, then its validation labels: train validates on the rows of
    # part val, the images the run validated on.
    assert [(r["label"], r["source"], r["part"]) for r in rows[: len(labeled)]] == [
        (s.label, "labeled", "train") for s in labeled[10:]
    ] + [(s.label, "labeled", "val") for s in labeled[:10]]
    pseudo = rows[len(labeled) :]
    reader = Reader.load(run)
    reads = {p.name: reader.read(p) for p in sorted(unlabeled.iterdir())}
    sure = {n for n, r in reads.items() if r.confidence >= 0.5 and r.text}
    assert 0 < len(sure) < len(reads), "the base model reads them all alike; pick another line"
    assert {Path(r["path"]).name for r in pseudo} == sure and len(pseudo) == len(sure)
    assert f"read {len(reads):,} unlabeled image(s)" in stdout  # the one named twice: once
    for row in pseudo:
        read = reads[Path(row["path"]).name]
        assert row["source"] == "pseudo" and row["label"] == read.text and row["part"] == "train"
        assert float(row["confidence"]) == pytest.approx(read.confidence, abs=1e-5)
        assert Path(row["path"]).is_absolute()
    # train reads the file as it is; the user's images are untouched.
    assert len(read_labels_file(out)) == len(rows)
    assert _digests(unlabeled) == before
    # A lower line keeps more.
    succeeds([*argv, "--min-confidence", "0.05"], capsys)
    assert len(read_labels_file(out)) > len(rows)

    # The next round: a run trained on that file keeps the person's labels as labels and
    # reads the pseudo-labeled images again (with its better model), not its earlier reads.
    both = read_labels_file(out)
    run2 = base_model_run(tmp_path / "run2", [(s.path, s.label) for s in both], [], source=out)
    out2 = tmp_path / "round2.csv"
    stdout, _ = succeeds(["pseudo-label", run2, unlabeled, "--out", out2], capsys)
    assert f"read {len(reads):,} unlabeled image(s)" in stdout
    with open(out2, newline="") as handle:
        sources = [r["source"] for r in csv.DictReader(handle)]
    assert sources.count("labeled") == len(labeled)


def test_pseudo_label_errors(run_and_unlabeled, tmp_path: Path, capsys) -> None:
    run, unlabeled, _ = run_and_unlabeled
    out = tmp_path / "labels.csv"
    fails(["pseudo-label", run, unlabeled, "--out", out, "--min-confidence", "2"], capsys,
          "--min-confidence '2'", "from 0 to 1")  # fmt: skip
    fails(["pseudo-label", "base", unlabeled, "--out", out], capsys, "train.csv", "run folder")
    fails(["pseudo-label", run, tmp_path / "nowhere", "--out", out], capsys, "does not exist")
    # A run that did not learn: its reads would teach its mistakes.
    import onnx

    from captcha_ocr.metadata import NOT_USABLE_KEY
    from captcha_ocr.runfolder import ONNX_FILE

    proto = onnx.load(run / ONNX_FILE)
    entry = proto.metadata_props.add()
    entry.key, entry.value = NOT_USABLE_KEY, "validation accuracy 0.0 < 0.5"
    onnx.save(proto, run / ONNX_FILE)
    fails(["pseudo-label", run, unlabeled, "--out", out], capsys, "did not learn", "0.0 < 0.5")
    assert not out.exists()


def test_suspects_are_the_person_labels_only(run_and_unlabeled, tmp_path: Path, capsys) -> None:
    """A pseudo-label the run now reads otherwise is no suspect: nobody typed it to fix; the
    same row, typed, is one."""
    from captcha_ocr.suspects import find_run_suspects

    run, unlabeled, _ = run_and_unlabeled
    out = tmp_path / "labels.csv"
    succeeds(["pseudo-label", run, unlabeled, "--out", out, "--min-confidence", "0.5"], capsys)
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    wrong = next(r for r in rows if r["source"] == "pseudo")
    wrong["label"] = "dddddddd"  # no read of the base model gives it
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    samples = [(r["path"], r["label"]) for r in rows]
    marked = base_model_run(tmp_path / "marked", samples, [], source=out)
    typed = base_model_run(tmp_path / "typed", samples, [])
    assert wrong["path"] in {s.path for s in find_run_suspects(typed)}
    assert wrong["path"] not in {s.path for s in find_run_suspects(marked)}
