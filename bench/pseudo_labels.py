"""What pseudo-labels give: a run trained on part of a set's labels reads the rest of its
development images as if they were unlabeled, and a training on its labels plus its sure reads
(``captcha-ocr pseudo-label``) is read on the held-out fifth beside the run itself.

    python bench/pseudo_labels.py --set rkn_securimage --labels 1218 --seeds 0
    python bench/pseudo_labels.py --set rkn_securimage --labels 1218 --seeds 0 \\
        --small KEEP/runs/rkn_securimage-0          # a real_sites.py --keep run of those labels

The labeled part is what ``bench/real_sites.py --max-train N`` trains on (the first N of the
development part in the order of a hash of the file names); the rest of the development part
is read without its labels, which serve here only to measure the pseudo-labels' precision.
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

from common import record, table
from real_sites import (
    SITES,
    development_part,
    held_out,
    run_one,
    site_samples,
    write_csv,
)

from captcha_ocr.cli.options import PSEUDO_MIN_CONFIDENCE

HEADER = [
    "set",
    "seed",
    "labels",
    "unlabeled read",
    "kept (share)",
    "kept right",
    "held-out: labels only",
    "labels + pseudo-labels",
    "train s (labels + pseudo)",
]


def one_seed(
    site, seed: int, labels: int, min_confidence: str, small: Path | None, work: Path, flags=()
):
    """The run on ``labels`` labels (trained, or ``small``), its pseudo-labels, the training on
    both, and their held-out reads: one table row."""
    from captcha_ocr.data import read_labels_file
    from captcha_ocr.evaluate import evaluate
    from captcha_ocr.infer import Reader
    from captcha_ocr.pseudo_labels import pseudo_label, write_pseudo_csv

    samples = site_samples(site)
    labeled = development_part(samples, labels)
    taken = {path for path, _ in labeled}
    unlabeled = [s for s in development_part(samples, len(samples)) if s[0] not in taken]
    test_csv = work / "test.csv"
    write_csv([s for s in samples if held_out(Path(s[0]).name)], test_csv)
    if small is None:
        small = work / "labels-only" / f"{site.name}-{seed}"
        run_one(site, seed, list(flags), labels, work / "labels-only")
    small_run = small / "runs" / "latest"
    if {s.path for s in read_labels_file(small / "dev.csv")} != taken:
        sys.exit(f"{small} was not trained on the first {labels} development images")
    result = pseudo_label(small_run, [path for path, _ in unlabeled], float(min_confidence))
    truth = dict(unlabeled)
    right = sum(truth[path] == text for path, text, _ in result.kept)
    both = write_pseudo_csv(result, work / f"pseudo-{seed}.csv")
    command = [
        sys.executable, "-m", "captcha_ocr", "train", str(both),
        "--out", str(work / "pseudo-runs"), "--seed", str(seed), "--quiet", *flags,
    ]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    test = read_labels_file(test_csv)
    accuracy = {
        name: evaluate(Reader.load(run, threads=2), test).accuracy
        for name, run in (("small", small_run), ("both", work / "pseudo-runs" / "latest"))
    }
    row = {
        "set": site.name, "seed": seed, "labels": labels, "read": result.read,
        "kept": len(result.kept), "kept_right": right, "min_confidence": result.min_confidence,
        "small": accuracy["small"], "both": accuracy["both"], "seconds": seconds,
    }  # fmt: skip
    print(json.dumps(row), flush=True)
    return [
        site.name,
        seed,
        f"{labels:,}",
        f"{result.read:,}",
        f"{len(result.kept):,} ({len(result.kept) / max(1, result.read):.0%})",
        f"{right / max(1, len(result.kept)):.2%}",
        f"{accuracy['small']:.2%}",
        f"**{accuracy['both']:.2%}**",
        f"{seconds:.0f}",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--set", default="rkn_securimage", choices=[s.name for s in SITES])
    parser.add_argument("--labels", type=int, default=1218, help="labeled development images")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--min-confidence", default=PSEUDO_MIN_CONFIDENCE, help="as pseudo-label's flag"
    )
    parser.add_argument("--small", type=Path, help="a real_sites.py --keep run of the labels")
    parser.add_argument("--keep", type=Path, help="work here and keep the runs")
    parser.add_argument("--section", default="pseudo-labels", help="RESULTS.md section name")
    parser.add_argument("--no-record", action="store_true", help="do not write RESULTS.md")
    parser.add_argument("--flags", nargs=argparse.REMAINDER, default=[], help="train flags")
    args = parser.parse_args(argv)
    if args.small and len(args.seeds) > 1:
        parser.error("--small is one run: give one seed")
    site = next(s for s in SITES if s.name == args.set)
    rows = []
    with tempfile.TemporaryDirectory(prefix="captcha-pseudo-") as tmp:
        for seed in args.seeds:
            work = (args.keep or Path(tmp)) / f"seed-{seed}"
            work.mkdir(parents=True, exist_ok=True)
            rows.append(
                one_seed(site, seed, args.labels, args.min_confidence, args.small, work, args.flags)
            )
    title = "Pseudo-labels: a run's sure reads of unlabeled images as labels"
    record(None if args.no_record else args.section, title, table(HEADER, rows))


if __name__ == "__main__":
    main()
