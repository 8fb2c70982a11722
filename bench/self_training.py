"""What ``captcha-ocr train LABELS --unlabeled FOLDER`` gives: a set's first N development
labels train, the rest of its development part is the folder of unlabeled images, and every
round's run is read on the held-out fifth beside the first one (labels only).

    python bench/self_training.py --set captcha_images_v2 --labels 50 --seeds 0 1 2
    python bench/self_training.py --set rkn_securimage --labels 609 --seeds 0

The labeled part is what ``bench/real_sites.py --max-train N`` trains on (the first N of the
development part in the order of a hash of the file names); the unlabeled folder links the
rest, whose labels serve here only to count how many pseudo-labels were right. One training
command a seed, as a user runs it; the rounds are its run folders in order.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH_DIR, plot_to, record, table
from real_sites import SITES, development_part, held_out, site_samples, write_csv

from captcha_ocr.cli.options import SELF_TRAINING_ROUNDS

HEADER = [
    "set",
    "seed",
    "labels",
    "unlabeled",
    "held-out, round by round (round 1: labels only)",
    "pseudo-labels kept (right), round by round",
    "latest (best validation)",
    "gain",
    "train s (all rounds)",
]


def _pseudo_counts(labels_file: Path, truth: dict[str, str]) -> tuple[int, int]:
    """The pseudo-labels a round trained on, and how many of them were right."""
    from captcha_ocr.data import PSEUDO_SOURCE, SOURCE_COLUMN, labels_file_column, read_labels_file

    marks = labels_file_column(labels_file, SOURCE_COLUMN)
    rows = [s for s in read_labels_file(labels_file) if marks.get(s.path) == PSEUDO_SOURCE]
    return len(rows), sum(truth.get(s.path) == s.label for s in rows)


def one_seed(site, seed: int, labels: int, rounds: int, work: Path, flags=()) -> tuple[dict, list]:
    """The training command with ``--unlabeled`` on one seed: its figures, and a table row."""
    from captcha_ocr.data import read_labels_file
    from captcha_ocr.evaluate import evaluate
    from captcha_ocr.infer import Reader
    from captcha_ocr.runfolder import PSEUDO_CSV

    work = work.resolve()
    samples = site_samples(site)
    labeled = development_part(samples, labels)
    taken = {path for path, _ in labeled}
    unlabeled = [s for s in development_part(samples, len(samples)) if s[0] not in taken]
    write_csv(labeled, work / "labels.csv")
    write_csv([s for s in samples if held_out(Path(s[0]).name)], work / "test.csv")
    test = read_labels_file(work / "test.csv")
    folder = work / "unlabeled"
    folder.mkdir()
    for k, (path, _) in enumerate(unlabeled):  # links: the images stay where they are
        (folder / f"{k:05d}-{Path(path).name}").symlink_to(path)
    command = [
        sys.executable, "-m", "captcha_ocr", "train", str(work / "labels.csv"),
        "--out", str(work / "runs"), "--seed", str(seed), "--quiet",
        "--unlabeled", str(folder), "--rounds", str(rounds), *flags,
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"train failed ({done.returncode}): {done.stderr[-2000:]}")
    runs = sorted(p for p in (work / "runs").iterdir() if p.name != "latest")
    accuracy = [evaluate(Reader.load(run, threads=2), test).accuracy for run in runs]
    truth = dict(unlabeled)
    kept = [_pseudo_counts(run / PSEUDO_CSV, truth) for run in runs[:-1]]
    latest = runs.index((work / "runs" / "latest").resolve())
    row = {
        "set": site.name, "seed": seed, "labels": labels, "unlabeled": len(unlabeled),
        "accuracy": accuracy, "kept": kept, "latest": latest + 1, "seconds": seconds,
    }  # fmt: skip
    print(json.dumps(row), flush=True)
    return row, [
        site.name,
        seed,
        f"{labels:,}",
        f"{len(unlabeled):,}",
        " / ".join(f"{a:.2%}" for a in accuracy),
        " / ".join(f"{n:,} ({right / max(1, n):.1%})" for n, right in kept),
        f"round {latest + 1}: **{accuracy[latest]:.2%}**",
        f"{100 * (accuracy[latest] - accuracy[0]):+.2f} pts",
        f"{seconds:.0f}",
    ]


def plot_rounds(rows: list[dict], path: Path) -> Path:
    """Held-out accuracy against the round, one line a seed (round 1: the labels alone)."""
    with plot_to(path, (5.5, 3.4)) as axis:
        for row in rows:
            rounds = range(1, len(row["accuracy"]) + 1)
            axis.plot(rounds, [100 * a for a in row["accuracy"]], marker="o",
                      label=f"{row['set']}, {row['labels']:,} labels, seed {row['seed']}")  # fmt: skip
        axis.set_xticks(range(1, max(len(r["accuracy"]) for r in rows) + 1))
        axis.set_xlabel("round (1: the labels alone; then labels + the last run's reads)")
        axis.set_ylabel("held-out accuracy (%)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--set", default="captcha_images_v2", choices=[s.name for s in SITES])
    parser.add_argument("--labels", type=int, default=50, help="labeled development images")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--rounds", type=int, default=SELF_TRAINING_ROUNDS, help="train's --rounds")
    parser.add_argument("--keep", type=Path, help="work here and keep the runs")
    parser.add_argument("--section", default="self-training", help="RESULTS.md section name")
    parser.add_argument("--no-record", action="store_true", help="do not write RESULTS.md")
    parser.add_argument("--flags", nargs=argparse.REMAINDER, default=[], help="train flags")
    args = parser.parse_args(argv)
    site = next(s for s in SITES if s.name == args.set)
    figures, rows = [], []
    with tempfile.TemporaryDirectory(prefix="captcha-self-training-") as tmp:
        for seed in args.seeds:
            work = (args.keep or Path(tmp)) / f"{site.name}-{args.labels}-{seed}"
            work.mkdir(parents=True)
            figure, row = one_seed(site, seed, args.labels, args.rounds, work, args.flags)
            figures.append(figure)
            rows.append(row)
    title = "Self-training: train --unlabeled, round by round"
    text = table(HEADER, rows)
    if not args.no_record:
        plot = plot_rounds(figures, BENCH_DIR / f"{args.section}.png")
        text += f"\n\n![held-out accuracy, round by round]({plot.name})"
    record(None if args.no_record else args.section, title, text)


if __name__ == "__main__":
    main()
