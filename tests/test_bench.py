"""Smoke tests of the benchmark scripts: tiny runs that check they work and write results."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

pytestmark = pytest.mark.slow


def test_update_section_replaces_only_its_own_block(tmp_path: Path) -> None:
    from common import update_section

    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\nhand-written intro\n")
    update_section("a", "first", results)
    update_section("b", "other", results)
    update_section("a", "second", results)
    text = results.read_text()
    assert "hand-written intro" in text and "second" in text and "other" in text
    assert "first" not in text and text.count("<!-- a -->") == 1


def test_a_bench_measures_the_package_beside_it(tmp_path: Path) -> None:
    """Run from another checkout (a git worktree), a bench and the trainings it starts import
    that checkout's captcha_ocr, not the one the environment has installed."""
    other = tmp_path / "worktree"
    (other / "bench").mkdir(parents=True)
    (other / "bench" / "common.py").write_text((BENCH / "common.py").read_text())
    (other / "src" / "captcha_ocr").mkdir(parents=True)
    (other / "src" / "captcha_ocr" / "__init__.py").write_text("WHERE = 'the other checkout'\n")
    script = other / "bench" / "probe.py"
    script.write_text(
        "import subprocess, sys\n"
        "import common\n"
        "import captcha_ocr\n"
        "print(captcha_ocr.WHERE)\n"
        "child = 'import captcha_ocr; print(captcha_ocr.WHERE)'\n"
        "subprocess.run([sys.executable, '-c', child], check=True)\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, check=True
    )
    assert done.stdout.splitlines() == ["the other checkout"] * 2, done.stdout + done.stderr


def test_crossval_smoke(synth_dir: Path, tmp_path: Path) -> None:
    import crossval

    results = tmp_path / "RESULTS.md"
    assert (
        crossval.main(
            [
                "--data",
                str(synth_dir),
                "--preset",
                "tiny",
                "--folds",
                "3",
                "--only-folds",
                "0",
                "--epochs",
                "1",
                "--results",
                str(results),
            ]
        )
        == 0
    )
    text = results.read_text()
    assert "<!-- crossval-tiny -->" in text and "| 0 | 133 / 67 |" in text
    assert (tmp_path / "crossval_tiny.png").is_file()


def test_time_to_accuracy_smoke(synth_dir: Path, tmp_path: Path) -> None:
    import time_to_accuracy

    results = tmp_path / "RESULTS.md"
    assert (
        time_to_accuracy.main(
            [
                "--data",
                str(synth_dir),
                "--presets",
                "tiny",
                "--default-epochs",
                "1",
                "--results",
                str(results),
            ]
        )
        == 0
    )
    assert "time to CER 0.007" in results.read_text()
    assert (tmp_path / "time_to_accuracy.png").is_file()


def test_styles_smoke(tmp_path: Path) -> None:
    import styles

    results = tmp_path / "RESULTS.md"
    assert (
        styles.main(
            [
                "--styles",
                "dark",
                "--train-count",
                "200",
                "--test-count",
                "10",
                "--preset",
                "tiny",
                "--epochs",
                "1",
                "--seeds",
                "0",
                "1",
                "--results",
                str(results),
            ]
        )
        == 0
    )
    text = results.read_text()
    assert "<!-- styles-tiny-seeds -->" in text and "| per seed |" in text
    # One style (the one that needs --label-pattern) and two seeds: each more costs a
    # training and an export (~13 s); what the styles draw is tested below.
    assert "| dark |" in text and "--label-pattern" in text
    [row] = [line for line in text.splitlines() if line.startswith("| dark |")]
    assert len(re.findall(r"\d+\.\d\d% / \d+\.\d\d%", row)) == 1  # seeds 0 and 1


def test_style_effects_make_what_they_claim(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image
    from styles import STYLES, make_set

    transparent = next(s for s in STYLES if s.name == "transparent")
    folder = make_set(transparent, tmp_path / "t", 3, seed=0)
    image = Image.open(next(folder.glob("*.png")))
    assert image.mode == "P" and "transparency" in image.info
    dark = next(s for s in STYLES if s.name == "dark")
    folder = make_set(dark, tmp_path / "d", 3, seed=0)
    names = sorted(p.name for p in folder.glob("*.png"))
    assert all(n[:5].isdigit() and n[5] == "_" for n in names)
    pixels = np.asarray(Image.open(folder / names[0]).convert("L"))
    assert np.median(pixels) < 128  # light text on a dark background
    lookalikes = next(s for s in STYLES if s.name == "lookalikes")
    assert (
        lookalikes.font and len(list(make_set(lookalikes, tmp_path / "l", 3, 0).glob("*.png"))) == 3
    )


def test_int8_and_read_speed_smoke(trained_run: Path, tmp_path: Path) -> None:
    import shutil

    import int8

    from captcha_ocr.export import export_int8

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    export_int8(run)
    results = tmp_path / "RESULTS.md"
    assert (
        int8.main(
            [str(run), "--single", "20", "--batch", "8", "--rounds", "2", "--results", str(results)]
        )
        == 0
    )
    text = results.read_text()
    assert "| float |" in text and "| int8 |" in text


@pytest.fixture
def kept_folder(trained_run: Path, tmp_path: Path) -> Path:
    """A real_sites.py --keep folder: the run under runs/latest, and as its held-out part
    (test.csv) the run's own validation split."""
    import shutil

    folder = tmp_path / "synth-0"
    shutil.copytree(trained_run, folder / "runs" / "latest")
    shutil.copy(trained_run / "val.csv", folder / "test.csv")
    return folder


def test_length_held_reads_a_kept_run_both_ways(kept_folder: Path, capsys) -> None:
    import length_held

    assert length_held.main([str(kept_folder), "--no-record"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| synth-0")]
    assert [row.split(" | ")[1] for row in rows] == ["validation", "held-out"]
    counts = length_held.read_both(kept_folder / "runs" / "latest", kept_folder / "test.csv")
    # Only reads of another length change, and those were wrong: none can break.
    assert counts["broken"] == 0 and counts["fixed"] <= counts["off_length"]
    assert counts["held"] == counts["free"] + counts["fixed"]


def test_reject_threshold_compares_both_rules_on_a_kept_run(kept_folder: Path, capsys) -> None:
    import reject_threshold

    assert reject_threshold.main([str(kept_folder), "--no-record"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| synth-0")]
    assert [row.split(" | ")[1] for row in rows] == list(reject_threshold.RULES)
    for row in reject_threshold.compare(kept_folder):
        # the held-out part is the validation split here: both measures agree
        assert row["test_accepts"] == pytest.approx(row["val_accepts"])
        assert row["test_precision"] == pytest.approx(row["val_precision"], nan_ok=True)


def test_plans_tell_what_the_defaults_choose_per_set(capsys) -> None:
    """Styles drawn small, no real set: one row each, as train --dry-run words it."""
    import plans

    argv = ["--sets", "--styles", "digits", "small", "--train-count", "60", "--no-record"]
    assert plans.main(argv) == 0
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines()]
    rows = {row[0]: row for row in rows if row[0].startswith("| style")}
    assert list(rows) == ["| style digits", "| style small"]
    column = {name: k + 1 for k, name in enumerate(plans.COLUMNS)}
    assert rows["| style small"][column["model input"]] == "160x64, 1 channel(s)"  # scaled up
    assert rows["| style digits"][column["data size"]] == "160x60"


def test_labels_needed_smoke(synth_dir: Path, tmp_path: Path, capsys) -> None:
    """A real training (one epoch of the default network) from the shipped base model: the
    row, the table, the headline and the plot are written. The other starts run the same
    code with other settings (checked below), and how rows are gathered is checked with a
    stand-in for training (each real training of the default network costs ~12 s)."""
    from captcha_ocr import basemodel

    if not (basemodel.BASE_DIR / "model.keras").is_file():
        pytest.skip("this checkout ships no base model")
    import pretrain

    results = tmp_path / "RESULTS.md"
    args = ["--data", str(synth_dir), "--sizes", "12", "--starts", "base"]
    args += ["--epochs", "1", "--results", str(results), "--section", "smoke"]
    assert pretrain.main(args) == 0
    printed = capsys.readouterr().out
    assert "12 labels, base: accuracy" in printed
    text = results.read_text()
    assert "<!-- smoke -->" in text and "| 12 | base |" in text
    assert "`base` (--init base)" in text and (tmp_path / "smoke.png").is_file()


def fake_training(seen: list):
    """A stand-in for ``pretrain.train_and_test``: no training; accuracy grows with the
    subset, fastest for "base"; it notes the subset and the test part it was given."""
    from captcha_ocr.data import read_labels_file

    gain = {"none": 0.001, "synth": 0.002, "base": 0.004}

    def train_and_test(csv, test, start, args, work):
        chosen = read_labels_file(csv)
        seen.append((start, {s.path for s in chosen}, {s.path for s in test}))
        accuracy = min(1.0, 0.8 + gain[start] * len(chosen))
        return {"start": start, "accuracy": accuracy, "cer": 1 - accuracy, "epochs": 3,
                "seconds": 6.0 * len(chosen)}  # fmt: skip

    return train_and_test


def test_labels_needed_runs_starts_side_by_side_on_nested_subsets(
    synth_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    import pretrain

    seen: list = []
    monkeypatch.setattr(pretrain, "train_and_test", fake_training(seen))
    monkeypatch.setattr(pretrain, "REFERENCE_SET", synth_dir)  # its split: crossval's fold 0
    results = tmp_path / "RESULTS.md"
    args = ["--data", str(synth_dir), "--sizes", "100", "25", "50", "--results", str(results)]
    assert pretrain.main(args) == 0
    # For each size, every start, one after the other; nested subsets; never a test image.
    assert [(start, len(chosen)) for start, chosen, _ in seen] == [
        (start, size) for size in (25, 50, 100) for start in ("none", "synth", "base")
    ]
    assert seen[0][1] < seen[3][1] < seen[6][1] and seen[0][1] == seen[1][1] == seen[2][1]
    test = seen[0][2]
    assert len(test) == 40 and not any(chosen & test for _, chosen, _ in seen)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("25 labels, none: accuracy 82.50%, CER 0.1750, 3 epochs")
    text = results.read_text()
    assert "<!-- pretrain -->" in text and (tmp_path / "pretrain.png").is_file()
    assert "Test set: 40 images, fold 0 of crossval.py" in text
    # none: 0.825, 0.85, 0.9; synth: 0.85, 0.9, 1.0; base: 0.9, 1.0, 1.0
    assert "| 95% | more than 100 | 100 (10.0 min) | 50 (5.0 min) |" in text
    assert "| 97% | more than 100 | 100 (10.0 min) | 50 (5.0 min) |" in text
    assert "| 50 | base | 100.00% | 0.0000 | 3 | 300 |" in text


def test_labels_needed_on_another_set_holds_out_its_hashed_fifth(
    synth_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    import pretrain
    import real_sites

    seen: list = []
    monkeypatch.setattr(pretrain, "train_and_test", fake_training(seen))
    results = tmp_path / "RESULTS.md"
    args = ["--data", str(synth_dir), "--sizes", "30", "--starts", "base", "--goals", "0.9"]
    assert pretrain.main([*args, "--results", str(results), "--no-record"]) == 0
    assert not results.exists() and not list(tmp_path.glob("*.png"))
    held = {str(p) for p in synth_dir.iterdir() if real_sites.held_out(p.name)}
    assert seen[0][2] == held
    assert pretrain.main([*args, "--results", str(results)]) == 0
    section = f"labels-needed-{synth_dir.name}"
    assert f"<!-- {section} -->" in results.read_text()
    assert (tmp_path / f"{section}.png").is_file()
    assert "the fifth that real_sites.py holds out" in capsys.readouterr().out


def test_labels_needed_starts_are_what_they_say() -> None:
    """Each start's settings, once ``init`` is resolved as train resolves it."""
    import argparse

    import pretrain

    from captcha_ocr.config import resolve_train_config
    from captcha_ocr.warmstart import resolve_init

    args = argparse.Namespace(seed=0, epochs=None, pretrain_images=40, pretrain_epochs=1)
    starts = {}
    for start in pretrain.STARTS:
        overrides = pretrain.overrides_for(start, args)
        config = resolve_init(resolve_train_config("default", cli_overrides=overrides))
        starts[start] = (config.init, config.pretrain, config.rescue)
    assert starts == {
        "none": (None, None, False),
        "synth": (None, "synth", False),
        "base": ("base", None, False),
    }


def test_labels_needed_refuses_base_for_another_network(synth_dir: Path, capsys) -> None:
    import pretrain

    with pytest.raises(SystemExit):
        pretrain.main(["--data", str(synth_dir), "--preset", "tiny", "--starts", "none", "base"])
    assert "--preset default or leave base out of --starts" in capsys.readouterr().err


def test_fewest_labels_to_reach_a_goal() -> None:
    import pretrain

    rows = [
        {"images": 50, "start": "none", "accuracy": 0.90, "seconds": 60},
        {"images": 50, "start": "base", "accuracy": 0.96, "seconds": 30},
        {"images": 100, "start": "none", "accuracy": 0.97, "seconds": 120},
        {"images": 100, "start": "base", "accuracy": 0.94, "seconds": 45},  # noise: a dip
        {"images": 200, "start": "none", "accuracy": 0.99, "seconds": 300},
        {"images": 200, "start": "base", "accuracy": 0.99, "seconds": 90},
    ]
    assert pretrain.fewest_to_reach(rows, "none", 0.95) == "100 (2.0 min)"
    assert pretrain.fewest_to_reach(rows, "base", 0.95) == "50 (0.5 min)"
    assert pretrain.fewest_to_reach(rows, "base", 0.97) == "200 (1.5 min)"
    assert pretrain.fewest_to_reach(rows, "none", 0.995) == "more than 200"


def test_real_sites_smoke(synth_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """One fake "site" (a folder of labeled captchas): its held-out fifth is fixed by the
    file names, train runs as a user would run it, the table lands in RESULTS.md."""
    import shutil

    import real_sites

    site = tmp_path / "datasets" / "fake"
    shutil.copytree(synth_dir, site)
    monkeypatch.setattr(real_sites, "DATASETS", tmp_path / "datasets")
    monkeypatch.setattr(real_sites, "SITES", [real_sites.Site("fake")])
    results = tmp_path / "RESULTS.md"
    monkeypatch.setattr(real_sites, "update_section", lambda n, md: results.write_text(md))
    log = tmp_path / "rows.jsonl"
    argv = ["--sets", "fake", "--max-train", "60", "--log", str(log),
            "--variant", "one=--preset tiny --epochs 1", "--variant", "two=--preset tiny --epochs 2"]  # fmt: skip
    assert real_sites.main(argv) == 0
    names = [p.name for p in site.iterdir()]
    held = [n for n in names if real_sites.held_out(n)]
    assert 0.1 < len(held) / len(names) < 0.3  # about a fifth, by name alone
    table = results.read_text()
    assert (
        f"| fake | one | 60 | {len(held)} |" in table and "one: --preset tiny --epochs 1" in table
    )
    assert f"| fake | two | 60 | {len(held)} |" in table
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["variant"], r["epochs"]) for r in rows] == [("one", 1), ("two", 2)]
    # Each row names its commit, and how the stored reject threshold holds on the held-out part.
    assert all(r["commit"] and 0 <= r["accepts"] <= 1 for r in rows)
    assert "at the stored threshold" in table


def test_recorded_commands_can_be_pasted_again(monkeypatch) -> None:
    import shlex

    from common import command_line

    argv = [str(BENCH / "read_speed.py"), "--runs", "full convs=a.onnx"]
    monkeypatch.setattr(sys, "argv", argv)
    assert "--runs 'full convs=a.onnx'" in command_line()
    assert shlex.split(command_line())[-2:] == argv[-2:]


def test_read_speed_smoke(trained_run: Path, tmp_path: Path) -> None:
    import read_speed

    results = tmp_path / "RESULTS.md"
    argv = ["--single", "5", "--batch", "4", "--rounds", "1", "--default-size", "96x32",
            "--unfolded", "--runs", f"tiny run={trained_run}",
            "--results", str(results), "--section", "speed-96"]  # fmt: skip
    assert read_speed.main(argv) == 0
    text = results.read_text()
    assert "<!-- speed-96 -->" in text and "default model 96x32" in text
    assert "| default | 1 |" in text and "| reference | 2 |" in text
    # A model given under a name of its own is measured beside the two and compared.
    assert "| tiny run | 2 |" in text and "default against tiny run, 1 thread(s)" in text
    assert "default against default, scaling unfolded" in text
    assert "| default, scaling unfolded | 2 |" in text
    # A trained model reads the bench's noise with every length allowed: greedy, as it reads
    # its own style, not held to its trained lengths.
    import numpy as np

    from captcha_ocr import Reader

    reader = read_speed.greedy_on_noise(Reader.load(trained_run))
    spec = reader.spec
    steps = reader.log_probs(np.zeros((1, spec.height, spec.width, spec.channels))).shape[1]
    assert reader.spec.label_lengths == (0, steps)


def test_serve_load_exports_a_fresh_model_without_one_given(tmp_path: Path) -> None:
    import numpy as np
    import serve_load

    from captcha_ocr import Reader

    reader = Reader.load(serve_load.fresh_model(tmp_path))
    assert (reader.spec.width, reader.spec.height) == (200, 50)
    # Every length declared: the server decodes its reads of noise greedily, as trained ones.
    steps = reader.log_probs(np.zeros((1, 50, 200, reader.spec.channels))).shape[1]
    assert reader.spec.label_lengths[1] == steps


def test_small_set_speed_smoke(tmp_path: Path) -> None:
    """This tree against a commit (here HEAD, in a temporary worktree, removed after)."""
    import small_set_speed

    results = tmp_path / "RESULTS.md"
    argv = ["--against", "HEAD", "--images", "20", "--epochs", "1", "--rounds", "1",
            "--results", str(results)]  # fmt: skip
    assert small_set_speed.main(argv) == 0
    text = results.read_text()
    assert "<!-- small-set-speed -->" in text and "| HEAD |" in text and "| 1.00 |" in text
    worktrees = subprocess.run(["git", "worktree", "list"], capture_output=True, text=True)
    assert "small-set-speed-" not in worktrees.stdout


def test_shifted_moves_by_whole_pixels_and_repeats_the_border() -> None:
    import averaging
    import numpy as np

    batch = np.arange(12, dtype=np.float32).reshape(1, 3, 4, 1)
    right = averaging.shifted(batch, 0, 1)[0, :, :, 0]
    assert right.tolist() == [[0, 0, 1, 2], [4, 4, 5, 6], [8, 8, 9, 10]]
    up = averaging.shifted(batch, -1, 0)[0, :, :, 0]
    assert up.tolist() == [[4, 5, 6, 7], [8, 9, 10, 11], [8, 9, 10, 11]]
    assert np.array_equal(averaging.shifted(batch, 0, 0), batch)


def test_averaging_two_copies_of_a_run_reads_as_the_run(
    kept_folder: Path, tmp_path: Path, capsys
) -> None:
    import shutil

    import averaging

    twin = tmp_path / "twin-0"
    shutil.copytree(kept_folder, twin)
    assert averaging.main([str(kept_folder), str(twin), "--no-record"]) == 0
    table_rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines()]
    by_reads = {row[0].lstrip("| "): row for row in table_rows if len(row) == 5}
    assert set(by_reads) >= {"one run", "2 runs averaged"}
    # the same probabilities averaged are the same probabilities: the same reads
    assert by_reads["2 runs averaged"][2] == by_reads["one run"][2]
    other = tmp_path / "other-0"
    shutil.copytree(kept_folder, other)
    header, first = (kept_folder / "test.csv").read_text().splitlines()[:2]
    (other / "test.csv").write_text(f"{header}\n{first}\n")  # one image of the part
    with pytest.raises(SystemExit, match="not synth-0's"):
        averaging.main([str(kept_folder), str(other), "--no-record"])


def test_pseudo_labels_smoke(synth_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """A fake site: a run on 60 of its labels, its reads of the rest of the development part,
    a training on both; the row says how many were kept and how both runs read."""
    import shutil

    import pseudo_labels
    import real_sites

    shutil.copytree(synth_dir, tmp_path / "datasets" / "fake")
    monkeypatch.setattr(real_sites, "DATASETS", tmp_path / "datasets")
    monkeypatch.setattr(pseudo_labels, "SITES", [real_sites.Site("fake")])
    argv = ["--set", "fake", "--labels", "60", "--min-confidence", "0", "--keep", str(tmp_path / "k"),
            "--no-record", "--flags", "--preset", "tiny", "--epochs", "1", "--min-accuracy", "0"]  # fmt: skip
    pseudo_labels.main(argv)
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line[:1] == "{"]
    development = sum(not real_sites.held_out(p.name) for p in synth_dir.iterdir())
    assert [(r["labels"], r["read"]) for r in rows] == [(60, development - 60)]
    written = (tmp_path / "k" / "seed-0" / "pseudo-0.csv").read_text().splitlines()
    assert len(written) == 1 + 60 + rows[0]["kept"]


def test_self_training_smoke(synth_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """A fake site: train --unlabeled on 60 of its labels and the rest of its development
    part; the row has each round's held-out reads and the pseudo-labels each trained on."""
    import shutil

    import real_sites
    import self_training

    shutil.copytree(synth_dir, tmp_path / "datasets" / "fake")
    monkeypatch.setattr(real_sites, "DATASETS", tmp_path / "datasets")
    monkeypatch.setattr(self_training, "SITES", [real_sites.Site("fake")])
    argv = ["--set", "fake", "--labels", "60", "--rounds", "1", "--keep", str(tmp_path / "k"),
            "--no-record", "--flags", "--preset", "tiny", "--epochs", "1", "--min-accuracy", "0",
            "--pseudo-min-confidence", "0"]  # fmt: skip
    self_training.main(argv)
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in out.splitlines() if line[:1] == "{"]
    development = sum(not real_sites.held_out(p.name) for p in synth_dir.iterdir())
    assert [(r["labels"], r["unlabeled"], len(r["accuracy"])) for r in rows] == [
        (60, development - 60, 2)
    ]
    assert len(rows[0]["kept"]) == 1 and rows[0]["latest"] in (1, 2)
    assert self_training.plot_rounds(rows, tmp_path / "rounds.png").stat().st_size > 1000
    assert "| fake | 0 | 60 |" in out
    assert sorted(p.name for p in (tmp_path / "datasets" / "fake").iterdir()) == sorted(
        p.name for p in synth_dir.iterdir()
    )
