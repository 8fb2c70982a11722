"""How many real labeled images does it take to reach 95 %, with and without `--pretrain synth`?

One fixed fifth of the reference set (fold 0 of `crossval.py`) is the test set and is never
used for any choice. Training draws nested subsets of the other four fifths (the 50 images
of the smallest subset are also in every larger one) and trains the default recipe on each,
once as it is and once after pre-training on synthetic captchas (`--pretrain synth`).

    python bench/pretrain.py                          # 50 ... 832 real images
    python bench/pretrain.py --sizes 50 100 200 --pretrain-images 2000
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    BENCH_DIR,
    REFERENCE_SET,
    command_line,
    machine,
    plot_to,
    require_reference_set,
    table,
    update_section,
)
from crossval import fold_indices

from captcha_ocr.config import resolve_train_config
from captcha_ocr.data import find_samples, write_samples_csv
from captcha_ocr.evaluate import evaluate
from captcha_ocr.export import export_run
from captcha_ocr.infer import Reader
from captcha_ocr.train import train


def run(args: argparse.Namespace) -> tuple[list[dict], int]:
    samples = find_samples(args.data)
    test_index = set(fold_indices(len(samples), 5, args.fold_seed)[0].tolist())
    test = [s for i, s in enumerate(samples) if i in test_index]
    pool = [s for i, s in enumerate(samples) if i not in test_index]
    order = np.random.default_rng(args.seed).permutation(len(pool))  # nested subsets
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            chosen = [pool[i] for i in order[: min(size, len(pool))]]
            csv = Path(tmp) / f"train_{size}.csv"
            write_samples_csv(csv, chosen)
            for pretrain in (None, "synth"):
                overrides = {
                    "seed": args.seed,
                    "pretrain": pretrain,
                    "pretrain_images": args.pretrain_images,
                    "pretrain_epochs": args.pretrain_epochs,
                    "epochs": args.epochs,
                }
                config = resolve_train_config(args.preset, cli_overrides=overrides)
                started = time.perf_counter()
                result = train(csv, Path(tmp) / "runs", config, progress=False)
                seconds = time.perf_counter() - started
                export_run(result.run_dir)
                report = evaluate(Reader.load(result.run_dir), test)
                row = {
                    "images": len(chosen),
                    "pretrain": pretrain or "-",
                    "accuracy": report.accuracy,
                    "cer": report.cer,
                    "epochs": result.state.epochs_done,
                    "seconds": seconds,
                }
                rows.append(row)
                print(
                    f"{len(chosen)} images, pretrain {row['pretrain']}: accuracy "
                    f"{report.accuracy:.2%}, CER {report.cer:.4f} ({seconds:.0f} s)",
                    flush=True,
                )
    return rows, len(test)


def fewest_to_reach(rows: list[dict], pretrain: str, goal: float) -> str:
    sizes = [r["images"] for r in rows if r["pretrain"] == pretrain and r["accuracy"] >= goal]
    return str(min(sizes)) if sizes else f"more than {max(r['images'] for r in rows)}"


def report_markdown(rows: list[dict], args: argparse.Namespace, plot: Path | None) -> str:
    body = table(
        ["real training images", "pre-training", "test accuracy", "CER", "epochs", "train s"],
        [
            [
                r["images"],
                "synth" if r["pretrain"] == "synth" else "none",
                f"{r['accuracy']:.2%}",
                f"{r['cer']:.4f}",
                r["epochs"],
                f"{r['seconds']:.0f}",
            ]
            for r in rows
        ],
    )
    text = (
        f"### Real images needed for {args.goal:.0%}, with and without `--pretrain synth`\n\n"
        f"Test set: a fixed fifth of the reference set ({args.test_count} images, never used "
        f"for any choice). Training: nested subsets of the other four fifths, default recipe; "
        f"10 % of each subset is its validation split. Pre-training: "
        f"{args.pretrain_images} synthetic captchas, {args.pretrain_epochs} epochs "
        f"(its time is included in train s).\n\n"
        f"Fewest real images that reach {args.goal:.0%}: "
        f"**{fewest_to_reach(rows, '-', args.goal)} without pre-training, "
        f"{fewest_to_reach(rows, 'synth', args.goal)} with it** (of the sizes tried).\n\n"
        f"{body}\n\nCommand: `{command_line()}`  \nMachine: {machine()}\n"
    )
    if plot is not None:
        text += f"\n![accuracy against real images]({plot.name})\n"
    return text


def plot_rows(rows: list[dict], goal: float, path: Path) -> Path:
    with plot_to(path, (6, 3.4)) as axis:
        for pretrain, label in (("-", "no pre-training"), ("synth", "--pretrain synth")):
            mine = [r for r in rows if r["pretrain"] == pretrain]
            axis.plot(
                [r["images"] for r in mine], [100 * r["accuracy"] for r in mine], "o-", label=label
            )
        axis.axhline(100 * goal, color="tab:red", linestyle="--", label=f"{goal:.0%}")
        axis.set_xscale("log")
        axis.set_xlabel("real labeled training images")
        axis.set_ylabel("test accuracy (%)")
        axis.set_title("reference set, held-out fifth")
        axis.legend(loc="lower right")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=REFERENCE_SET)
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200, 400, 832])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--epochs", type=int, help="epoch budget (default: the automatic one)")
    parser.add_argument("--pretrain-images", type=int, default=4000)
    parser.add_argument("--pretrain-epochs", type=int, default=15)
    parser.add_argument("--goal", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--fold-seed", type=int, default=2024, help="as in crossval.py")
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "RESULTS.md")
    args = parser.parse_args(argv)
    if args.data == REFERENCE_SET:
        require_reference_set()
    logging.basicConfig(level=logging.WARNING)
    rows, args.test_count = run(args)
    plot = plot_rows(rows, args.goal, args.results.parent / "pretrain.png")
    markdown = report_markdown(rows, args, plot)
    print(markdown)
    update_section("pretrain", markdown, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
