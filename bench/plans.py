"""What the defaults choose for each set of the development suite, without training: the
settings that adapt to the data, one row a set (``captcha_ocr.train.plan``, what ``train
--dry-run`` prints).

The real sets as ``bench/real_sites.py`` trains them (the development part, at most
``--max-train`` images, only the generic flags); the synthetic styles as ``bench/styles.py``
draws them (``--train-count`` images, its generic flags).

    python bench/plans.py                                   # every set and style
    python bench/plans.py --sets rkn_securimage --styles    # one set, no style
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import record, table
from real_sites import DATASETS, SITES, development_part, site_samples, write_csv
from styles import STYLES, make_set

# The plan's entries shown, in this order (train.plan words them).
COLUMNS = [
    "images", "label lengths", "data size", "model input", "time steps", "start", "epochs",
    "time limit", "batch size", "learning rate", "augmented",
]  # fmt: skip


def plan_row(name: str, data: Path, flags: dict) -> list[str]:
    from captcha_ocr.config import resolve_train_config
    from captcha_ocr.train import plan

    chosen = plan(data, resolve_train_config(cli_overrides=flags))
    return [name, *(chosen[column] for column in COLUMNS)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = [site.name for site in SITES]
    parser.add_argument("--sets", nargs="*", default=names, help="real sets (default: all)")
    parser.add_argument(
        "--styles", nargs="*", help="synthetic styles (default: all; the flag alone: none)"
    )
    parser.add_argument("--max-train", type=int, default=3000, help="real sets' images at most")
    parser.add_argument("--train-count", type=int, default=2000, help="images of each style")
    parser.add_argument("--section", default="plans", help="RESULTS.md section name")
    parser.add_argument("--no-record", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args(argv)
    styles = STYLES if args.styles is None else [s for s in STYLES if s.name in args.styles]
    sites = {site.name: site for site in SITES}
    missing = [n for n in args.sets if not (DATASETS / n).is_dir()]
    if missing:
        sys.exit(f"missing data set(s) under {DATASETS}: {missing} (see its README.md)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="captcha-plans-") as tmp:
        for name in args.sets:
            site = sites[name]
            csv_file = Path(tmp) / f"{name}.csv"
            write_csv(development_part(site_samples(site), args.max_train), csv_file)
            flags = {"label_pattern": site.label_pattern} if site.label_pattern else {}
            rows.append(plan_row(name, csv_file, flags))
            print(" | ".join(rows[-1]), flush=True)
        for style in styles:
            folder = make_set(style, Path(tmp) / style.name, args.train_count, seed=1)
            rows.append(plan_row(f"style {style.name}", folder, dict(style.flags)))
            print(" | ".join(rows[-1]), flush=True)
    text = table(["set", *COLUMNS], rows)
    record(None if args.no_record else args.section, "What the defaults choose for each set", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
