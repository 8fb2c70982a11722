"""How far averaging reads goes: several trained runs' per-step probabilities averaged (an
ensemble), and one run's over shifted copies of each image (test-time shifts), on the same
held-out part.

Takes folders that ``bench/real_sites.py --keep DIR`` leaves, all of one set (the same
``test.csv``, the same charset and time steps: seeds or variants of one default). Each run's
exported model reads the held-out part once as it is and once for each shift; the averages
are of probabilities (then greedy CTC decoding held to the trained lengths, as ``Reader``
reads). No training, and nothing here is a choice: it bounds what averaging could add.

    python bench/averaging.py KEEP/runs/rkn_securimage-0 KEEP/runs/rkn_securimage-1 ...
"""

from __future__ import annotations

import itertools
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import kept_run, kept_runs_parser, record, table

# Test-time shifts, (down, right) in model-input pixels: the image itself and 2 px each way.
SHIFTS = ((0, 0), (0, 2), (0, -2), (2, 0), (-2, 0))
# Ensembles of k runs: every combination, or this many of them (seeded) where there are more.
MOST_COMBINATIONS = 50


def shifted(batch: np.ndarray, down: int, right: int) -> np.ndarray:
    """``(B, H, W, C)`` moved by whole pixels, the border repeated into what opens up."""
    height, width = batch.shape[1:3]
    pad = ((0, 0), (abs(down),) * 2, (abs(right),) * 2, (0, 0))
    padded = np.pad(batch, pad, mode="edge")
    top, left = abs(down) - down, abs(right) - right
    return padded[:, top : top + height, left : left + width]


class RunReads:
    """One run's probabilities on the held-out part, for each shift in :data:`SHIFTS`
    (filled by :meth:`read`)."""

    def __init__(self, folder: Path) -> None:
        from captcha_ocr.data import read_labels_file
        from captcha_ocr.infer import Reader

        run, test_csv = kept_run(folder)
        self.name = folder.name
        self.reader = Reader.load(run / "model.onnx", threads=2, warn_not_usable=False)
        samples = read_labels_file(test_csv)
        self.paths = [s.path for s in samples]
        self.labels = [s.label for s in samples]
        self.probs: dict[tuple[int, int], np.ndarray] = {}

    def read(self) -> None:
        batch = np.stack([self.reader.preprocess(path) for path in self.paths])
        self.probs = {s: np.exp(self.reader.log_probs(shifted(batch, *s))) for s in SHIFTS}

    def accuracy(self, probs: np.ndarray) -> float:
        reads = self.reader.decode(np.log(probs))
        return sum(r.text == label for r, label in zip(reads, self.labels)) / len(self.labels)


def check_alike(runs: list[RunReads]) -> None:
    """Averaging needs the same images and the same output layout in every run."""
    first = runs[0]
    for run in runs[1:]:
        if run.paths != first.paths or run.labels != first.labels:
            raise SystemExit(f"{run.name}: its test.csv is not {first.name}'s; give one set")
        if (run.reader.charset, run.reader.time_steps) != (
            first.reader.charset,
            first.reader.time_steps,
        ):
            raise SystemExit(f"{run.name}: other characters or time steps than {first.name}")


def ensembles(runs: list[RunReads], k: int, seed: int = 0) -> list[float]:
    """Held-out accuracy of each averaged ensemble of ``k`` runs (unshifted reads)."""
    combos = list(itertools.combinations(range(len(runs)), k))
    if len(combos) > MOST_COMBINATIONS:
        pick = np.random.default_rng(seed).choice(len(combos), MOST_COMBINATIONS, replace=False)
        combos = [combos[i] for i in sorted(pick)]
    unshifted = SHIFTS[0]
    return [runs[0].accuracy(sum(runs[i].probs[unshifted] for i in combo) / k) for combo in combos]


def rows(runs: list[RunReads]) -> list[list[str]]:
    """One row per way of reading: mean, worst and best held-out accuracy over the runs or
    ensembles it covers."""

    def row(what: str, accuracies: list[float]) -> list[str]:
        mean = statistics.fmean(accuracies)
        return [what, str(len(accuracies))] + [
            f"{a:.2%}" for a in (mean, min(accuracies), max(accuracies))
        ]

    alone = [run.accuracy(run.probs[SHIFTS[0]]) for run in runs]
    shifts = [run.accuracy(sum(run.probs.values()) / len(SHIFTS)) for run in runs]
    out = [
        row("one run", alone),
        row(f"one run, {len(SHIFTS)} shifted copies averaged", shifts),
    ]
    out += [row(f"{k} runs averaged", ensembles(runs, k)) for k in range(2, len(runs) + 1)]
    return out


def misreads(runs: list[RunReads]) -> list[str]:
    """What every run averaged still misreads: label -> read (its confidence)."""
    average = sum(run.probs[SHIFTS[0]] for run in runs) / len(runs)
    reads = runs[0].reader.decode(np.log(average))
    return [
        f"{label} -> {r.text} ({r.confidence:.2f})"
        for r, label in zip(reads, runs[0].labels)
        if r.text != label
    ]


def main(argv: list[str] | None = None) -> int:
    args = kept_runs_parser(__doc__.split("\n\n")[0], "averaging").parse_args(argv)
    runs = [RunReads(folder) for folder in args.folders]
    check_alike(runs)  # before the reads, which take the time
    for run in runs:
        run.read()
    header = ["reads", "runs or ensembles", "held-out accuracy: mean", "worst", "best"]
    text = table(header, rows(runs))
    wrong = misreads(runs)
    text += (
        f"\n\n{len(runs[0].labels)} held-out images; every run averaged misreads {len(wrong)}: "
        + ", ".join(wrong)
    )
    record(None if args.no_record else args.section, "Averaging reads", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
