"""Reads held to the trained label lengths against free reads, on the same models.

Takes folders that ``bench/real_sites.py --keep DIR`` leaves (``DIR/runs/<set>-<seed>``: the
run under ``runs/latest``, its held-out part in ``test.csv``) and reads each run's validation
split and held-out part twice with its exported model: free (greedy, any length) and held to
the lengths of its training labels (what the reader does since the spec keeps
``min_label_length``; see ``decode.decode_batch``). No training; the models are whatever the
runs made. The validation rows are what a choice may look at; the held-out rows only report.

    python bench/length_held.py /tmp/keep/runs/rkn_securimage-0 /tmp/keep/runs/rkn_securimage-1
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import kept_run, kept_runs_parser, record, table


def read_both(run: Path, part: Path) -> dict:
    """Free and held reads of the ``part`` CSV by ``run``'s model: counts for one row."""
    from captcha_ocr.data import read_labels_file
    from captcha_ocr.infer import Reader

    reader = Reader.load(run / "model.onnx", threads=2)
    trained = [s.label for s in read_labels_file(run / "train.csv")]
    lengths = (min(map(len, trained)), max(map(len, trained)))
    samples = read_labels_file(part)
    texts = {}
    for name, (low, high) in (("free", (0, 10_000)), ("held", lengths)):
        reader.spec = dataclasses.replace(reader.spec, min_label_length=low, max_label_length=high)
        texts[name] = [p.text for p in reader.read_batch([s.path for s in samples])]
    labels = [s.label for s in samples]
    free = [t == label for t, label in zip(texts["free"], labels)]
    held = [t == label for t, label in zip(texts["held"], labels)]
    off_length = sum(not lengths[0] <= len(t) <= lengths[1] for t in texts["free"])
    return {
        "images": len(samples),
        "lengths": f"{lengths[0]}-{lengths[1]}",
        "free": sum(free),
        "held": sum(held),
        "off_length": off_length,
        "fixed": sum(h and not f for f, h in zip(free, held)),
        "broken": sum(f and not h for f, h in zip(free, held)),
    }


def main(argv: list[str] | None = None) -> int:
    args = kept_runs_parser(__doc__.split("\n\n")[0], "length-held").parse_args(argv)
    rows = []
    for folder in args.folders:
        run, test_csv = kept_run(folder)
        for part, csv_file in (("validation", run / "val.csv"), ("held-out", test_csv)):
            counts = read_both(run, csv_file)
            n = counts["images"]
            rows.append([
                folder.name, part, str(n), counts["lengths"], str(counts["off_length"]),
                f"{100 * counts['free'] / n:.2f}%", f"{100 * counts['held'] / n:.2f}%",
                f"+{counts['fixed']} / -{counts['broken']}",
            ])  # fmt: skip
            print(" | ".join(rows[-1]), flush=True)
    header = [
        "run", "part", "images", "trained lengths", "free reads of another length",
        "free (greedy) acc", "held acc", "right now / wrong now",
    ]  # fmt: skip
    text = table(header, rows)
    record(
        None if args.no_record else args.section, "Reads held to the trained label lengths", text
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
