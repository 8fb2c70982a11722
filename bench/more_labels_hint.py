"""Where the end-of-training hint "more labels should help most" fires, and where it must not.

Takes folders that ``bench/real_sites.py --keep DIR`` leaves (any sets, any variants). Each
run's exported model reads its own training and validation images, as ``train`` does after
its export, and the rule of ``captcha_ocr.more_labels`` says whether it would give the hint
(the read shares leave the sure misreads aside, as the rule does); the held-out part is read
beside it, to show what the rule could not see. No training.

    python bench/more_labels_hint.py KEEP/runs/henan_digits-0 KEEP/runs/rkn_securimage-0 ...
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import kept_run, kept_runs_parser, record, table

HEADER = [
    "run",
    "training images",
    "training misreads (sure)",
    "training read",
    "validation images",
    "validation misreads (sure)",
    "validation read",
    "held-out read",
    "hint",
]


def row(folder: Path) -> list[object]:
    """One kept run's reads of its three parts and whether the hint fires."""
    from captcha_ocr.data import read_labels_file
    from captcha_ocr.evaluate import evaluate
    from captcha_ocr.infer import Reader
    from captcha_ocr.more_labels import more_labels_hint, training_and_validation
    from captcha_ocr.runfolder import ONNX_FILE, TRAIN_CSV, VAL_CSV
    from captcha_ocr.suspects import CONFIDENT

    run, test_csv = kept_run(folder)
    reader = Reader.load(run / ONNX_FILE, threads=2, warn_not_usable=False)
    training = read_labels_file(run / TRAIN_CSV)
    both = evaluate(reader, training + read_labels_file(run / VAL_CSV))
    train, val = training_and_validation(both.results, len(training), CONFIDENT)
    held_out = evaluate(reader, read_labels_file(test_csv))
    # real_sites.py keeps a run in KEEP/runs/SET-SEED, or KEEP/VARIANT/SET-SEED with --variant
    name = folder.name if folder.parent.name == "runs" else f"{folder.parent.name}/{folder.name}"
    return [
        name,
        f"{train.images:,}",
        f"{train.misreads} ({train.sure})",
        f"{train.accuracy:.2%}",
        f"{val.images:,}",
        f"{val.misreads} ({val.sure})",
        f"{val.accuracy:.2%}",
        f"{held_out.accuracy:.2%}",
        "yes" if more_labels_hint(train, val) else "no",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = kept_runs_parser(__doc__.split("\n\n")[0], "more-labels-hint")
    args = parser.parse_args(argv)
    text = table(HEADER, [row(folder) for folder in args.folders])
    record(None if args.no_record else args.section, "The hint that more labels help most", text)


if __name__ == "__main__":
    main()
