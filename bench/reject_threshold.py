"""The recommended reject threshold with and without a floor of validation reads, on the same
models: chosen on the validation split, measured on the held-out part.

Takes folders that ``bench/real_sites.py --keep DIR`` leaves (``DIR/runs/<set>-<seed>``: the
run under ``runs/latest``, its held-out part in ``test.csv``), reads each run's validation
split and held-out part once with its exported model, and chooses ``min_confidence`` on the
validation reads two ways (``metrics.threshold_for_precision``): with no floor (any number of
reads may show 99 %: the rule before the floor) and with the floor the export uses now (at
least 100 reads, half of them under 200). No training; only the validation reads choose.

    python bench/reject_threshold.py /tmp/keep/runs/henan_digits-0 /tmp/keep/runs/rkn_securimage-0
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import kept_run, kept_runs_parser, record, table

# The two rules side by side: no floor (fewest=1), and the export's own (fewest=None).
RULES = {"no floor": 1, "floor (the export's)": None}


def reads(run: Path, part: Path) -> tuple[list[float], list[bool]]:
    """Confidences and right/wrong of ``run``'s model on the ``part`` CSV."""
    from captcha_ocr.data import read_labels_file
    from captcha_ocr.infer import Reader

    reader = Reader.load(run / "model.onnx", threads=2, warn_not_usable=False)
    samples = read_labels_file(part)
    predictions = reader.read_batch([s.path for s in samples])
    return [p.confidence for p in predictions], [
        p.text == s.label for p, s in zip(predictions, samples)
    ]


def kept_share_and_precision(confidences, correct, threshold: float) -> tuple[float, float]:
    kept = [ok for c, ok in zip(confidences, correct) if c >= threshold]
    return len(kept) / len(correct), (sum(kept) / len(kept) if kept else float("nan"))


def compare(folder: Path) -> list[dict]:
    """One row per rule for a kept run folder."""
    from captcha_ocr.metrics import threshold_for_precision

    run, test_csv = kept_run(folder)
    val, test = reads(run, run / "val.csv"), reads(run, test_csv)
    rows = []
    for rule, fewest in RULES.items():
        chosen = threshold_for_precision(*val, fewest=fewest)
        accepts, precision = kept_share_and_precision(*test, chosen.min_confidence)
        rows.append({
            "run": folder.name, "rule": rule, "min_confidence": chosen.min_confidence,
            "val_images": len(val[0]), "val_accepts": chosen.accepts,
            "val_precision": chosen.precision, "test_images": len(test[0]),
            "test_accuracy": sum(test[1]) / len(test[1]), "test_accepts": accepts,
            "test_precision": precision,
        })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    args = kept_runs_parser(__doc__.split("\n\n")[0], "reject-threshold-floor").parse_args(argv)
    lines = []
    for folder in args.folders:
        for r in compare(folder):
            lines.append([
                r["run"], r["rule"], f"{r['min_confidence']:.3f}",
                f"{r['val_accepts']:.1%} at {r['val_precision']:.1%} ({r['val_images']})",
                f"{r['test_accuracy']:.2%} ({r['test_images']})",
                f"{r['test_accepts']:.1%} at {r['test_precision']:.2%}",
            ])  # fmt: skip
            print(" | ".join(lines[-1]), flush=True)
    header = [
        "run", "rule", "min_confidence", "validation: accepts at precision (images)",
        "held-out accuracy (images)", "held-out: accepts at precision",
    ]  # fmt: skip
    text = table(header, lines)
    record(
        None if args.no_record else args.section,
        "The reject threshold with a floor of validation reads",
        text,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
