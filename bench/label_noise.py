"""How many planted wrong labels ``train`` finds: its ``suspect_labels.csv`` against the truth.

The set's fixed held-out fifth (``real_sites.held_out``: a hash of the file name) is never
trained on and its labels are never changed. In the rest, K labels (default 5 %) are
changed to plausible wrong ones: one or two characters replaced by other characters of the
set (seeded). The images are not copied: a labels CSV in a temporary folder points at them.
``captcha-ocr train`` then runs with default settings (plus ``--flags``) in its own process,
and the run's suspect list is scored: recall of the planted labels in its top K and in the
whole list, precision of its top K, and the model's accuracy on the held-out fifth.

    python bench/label_noise.py                                  # captcha_images_v2, 5 %
    python bench/label_noise.py --data ../shared/datasets/amazon --noise 0.02 --seed 1
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    REFERENCE_SET,
    command_line,
    git_revision,
    machine,
    table,
    update_section,
)
from real_sites import held_out, write_csv


def plant_noise(
    labels: list[str], share: float, rng: np.random.Generator
) -> tuple[list[str], list[int]]:
    """``labels`` with ``share`` of them (at least one) changed: one or two characters each
    replaced by another character of the labels' own alphabet -> (new labels, changed indices).

    >>> new, changed = plant_noise(["abc", "bca", "cab", "acb"], 0.5, np.random.default_rng(0))
    >>> len(changed), all(new[i] != old for i, old in enumerate(["abc", "bca", "cab", "acb"])
    ...                                     if i in changed)
    (2, True)
    """
    alphabet = sorted(set("".join(labels)))
    if len(alphabet) < 2:
        raise SystemExit("labels need at least two different characters to plant wrong ones")
    count = min(len(labels), max(1, round(share * len(labels))))
    changed = sorted(rng.choice(len(labels), count, replace=False).tolist())
    noisy = list(labels)
    for i in changed:
        chars = list(labels[i])
        spots = rng.choice(len(chars), min(len(chars), int(rng.integers(1, 3))), replace=False)
        for spot in spots:
            others = [c for c in alphabet if c != chars[spot]]
            chars[spot] = others[int(rng.integers(len(others)))]
        noisy[i] = "".join(chars)
    return noisy, changed


def score(suspects: list[str], planted: set[str]) -> dict:
    """Recall in the top K (K = planted) and in the whole list, precision of the top K."""
    k = len(planted)
    top = suspects[:k]
    found_top = sum(path in planted for path in top)
    return {
        "planted": k,
        "listed": len(suspects),
        "found_top_k": found_top,
        "found_all": sum(path in planted for path in suspects),
        "recall_top_k": found_top / k,
        "recall_all": sum(path in planted for path in suspects) / k,
        "precision_top_k": found_top / len(top) if top else float("nan"),
    }


def run(data: Path, share: float, seed: int, flags: list[str], work: Path) -> dict:
    from captcha_ocr.data import find_samples, read_labels_file
    from captcha_ocr.evaluate import evaluate
    from captcha_ocr.infer import Reader
    from captcha_ocr.runfolder import LATEST_LINK, ONNX_FILE, SUSPECTS_CSV
    from captcha_ocr.suspects import CONFIDENT, read_suspects_csv

    samples = [(str(Path(s.path).resolve()), s.label) for s in find_samples(data)]
    dev = [s for s in samples if not held_out(Path(s[0]).name)]
    test = [s for s in samples if held_out(Path(s[0]).name)]
    noisy, changed = plant_noise([label for _, label in dev], share, np.random.default_rng(seed))
    planted = {dev[i][0] for i in changed}
    write_csv([(path, label) for (path, _), label in zip(dev, noisy)], work / "dev.csv")
    write_csv(test, work / "test.csv")
    command = [
        sys.executable, "-m", "captcha_ocr", "train", str(work / "dev.csv"),
        "--out", str(work / "runs"), "--seed", str(seed), "--quiet", *flags,
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    row = {"set": data.name, "train": len(dev), "test": len(test), "seed": seed}
    row.update(status=done.returncode, seconds=time.perf_counter() - started)
    run_dir = work / "runs" / LATEST_LINK
    if not (run_dir / SUSPECTS_CSV).is_file():
        raise SystemExit(
            f"the run wrote no {SUSPECTS_CSV} (exit {done.returncode}):\n{done.stderr[-2000:]}"
        )
    suspects = read_suspects_csv(run_dir / SUSPECTS_CSV)
    row.update(score([str(Path(s.path).resolve()) for s in suspects], planted))
    row["confident"] = sum(s.confidence >= CONFIDENT for s in suspects)
    report = evaluate(
        Reader.load(run_dir / ONNX_FILE, threads=2), read_labels_file(work / "test.csv")
    )
    row["held_out_accuracy"] = report.accuracy
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=REFERENCE_SET, help="labeled folder or path,label CSV"
    )
    parser.add_argument(
        "--noise", type=float, default=0.05, help="share of training labels made wrong"
    )
    parser.add_argument("--seed", type=int, default=0, help="which labels, and train's --seed")
    parser.add_argument("--section", default="label-noise", help="RESULTS.md section name")
    parser.add_argument("--no-record", action="store_true", help="do not write RESULTS.md")
    parser.add_argument("--flags", nargs=argparse.REMAINDER, default=[], help="more train flags")
    args = parser.parse_args(argv)
    if not 0 < args.noise < 1:
        parser.error(f"--noise is a share between 0 and 1 (got {args.noise})")
    if not args.data.exists():
        sys.exit(f"no data at {args.data} (see ../shared/datasets/README.md)")

    with tempfile.TemporaryDirectory(prefix="captcha-noise-") as tmp:
        row = run(args.data, args.noise, args.seed, args.flags, Path(tmp))
    print(json.dumps(row), flush=True)

    from captcha_ocr.runfolder import SUSPECTS_CSV
    from captcha_ocr.suspects import CONFIDENT

    headers = [
        "set", "train / held out", "planted K", "suspects listed", f"conf. >= {CONFIDENT}",
        "recall@K", "recall (whole list)", "precision@K", "held-out acc", "train s", "exit",
    ]  # fmt: skip
    cells = [
        row["set"], f"{row['train']} / {row['test']}", row["planted"], row["listed"],
        row["confident"], f"{row['recall_top_k']:.0%} ({row['found_top_k']})",
        f"{row['recall_all']:.0%} ({row['found_all']})", f"{row['precision_top_k']:.0%}",
        f"{row['held_out_accuracy']:.2%}", f"{row['seconds']:.0f}", row["status"],
    ]  # fmt: skip
    markdown = (
        f"`{command_line()}` at {git_revision()}\n\n"
        f"Machine: {machine()}\n\n"
        f"{args.noise:.0%} of the training labels made wrong (seed {args.seed}); train flags: "
        f"{' '.join(args.flags) or '(defaults)'}. Suspects: the run's {SUSPECTS_CSV}: the "
        "images read otherwise than labeled, surest read first.\n\n" + table(headers, [cells])
    )
    print(markdown)
    if not args.no_record:
        update_section(args.section, f"## Label noise ({args.section})\n\n{markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
