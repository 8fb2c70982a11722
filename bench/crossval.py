"""5-fold cross-validation of a preset on a labeled set, through the public API.

In each fold the test fifth is never used for any choice: training carves its own
validation split (early stopping, checkpoint, learning rate) out of the other four fifths.

    python bench/crossval.py                       # default preset, reference set, 5 folds
    python bench/crossval.py --preset reference --folds 5 --epochs 300
"""

from __future__ import annotations

import argparse
import json
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
    mean_std,
    plot_to,
    require_reference_set,
    table,
    update_section,
)

from captcha_ocr.config import resolve_train_config
from captcha_ocr.data import find_samples, write_samples_csv
from captcha_ocr.evaluate import evaluate
from captcha_ocr.export import export_run
from captcha_ocr.infer import Reader
from captcha_ocr.train import train


def fold_indices(count: int, folds: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(count)
    return [np.sort(part) for part in np.array_split(order, folds)]


def run(args: argparse.Namespace) -> dict:
    samples = find_samples(args.data)
    overrides = {"epochs": args.epochs, "seed": args.seed, "time_limit": args.time_limit}
    config = resolve_train_config(args.preset, cli_overrides=overrides)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, test_index in enumerate(fold_indices(len(samples), args.folds, args.fold_seed)):
            if args.only_folds and k not in args.only_folds:
                continue
            test_set = set(test_index.tolist())
            train_samples = [s for i, s in enumerate(samples) if i not in test_set]
            test_samples = [samples[i] for i in test_index]
            train_csv = Path(tmp) / f"fold{k}_train.csv"
            write_samples_csv(train_csv, train_samples)
            started = time.perf_counter()
            result = train(train_csv, Path(tmp) / "runs", config, progress=False)
            seconds = time.perf_counter() - started
            export_run(result.run_dir)
            report = evaluate(Reader.load(result.run_dir), test_samples)
            row = {
                "fold": k,
                "train_images": len(train_samples),
                "test_images": len(test_samples),
                "accuracy": report.accuracy,
                "cer": report.cer,
                "epochs": result.state.epochs_done,
                "best_epoch": result.state.best_epoch,
                "train_seconds": round(seconds, 1),
                "wrong": [(Path(r.path).name, r.prediction) for r in report.wrong],
            }
            results.append(row)
            print(
                f"fold {k}: accuracy {report.accuracy:.2%}  CER {report.cer:.4f}  "
                f"({seconds:.0f} s, best epoch {result.state.best_epoch})",
                flush=True,
            )
    return {"preset": args.preset, "config": {"epochs": config.epochs}, "folds": results}


def report_markdown(summary: dict, plot: Path | None) -> str:
    rows = summary["folds"]
    acc_mean, acc_std = mean_std([r["accuracy"] for r in rows])
    cer_mean, cer_std = mean_std([r["cer"] for r in rows])
    sec_mean, _ = mean_std([r["train_seconds"] for r in rows])
    body = table(
        ["fold", "train / test images", "accuracy", "CER", "epochs (best)", "train s", "misread"],
        [
            [
                r["fold"],
                f"{r['train_images']} / {r['test_images']}",
                f"{r['accuracy']:.2%}",
                f"{r['cer']:.4f}",
                f"{r['epochs']} ({r['best_epoch']})",
                f"{r['train_seconds']:.0f}",
                ", ".join(f"{n}->{p}" for n, p in r["wrong"][:4])
                + (" ..." if len(r["wrong"]) > 4 else ""),
            ]
            for r in rows
        ],
    )
    text = (
        f"### {len(rows)}-fold cross-validation, preset `{summary['preset']}`\n\n"
        f"Mean whole-captcha accuracy **{acc_mean:.2%} ± {acc_std:.2%}**, "
        f"CER **{cer_mean:.4f} ± {cer_std:.4f}** (population std over folds); "
        f"{sec_mean:.0f} s of training per fold.\n\n{body}\n\n"
        f"Command: `{command_line()}`  \nMachine: {machine()}\n"
    )
    if plot is not None:
        text += f"\n![accuracy per fold]({plot.name})\n"
    return text


def plot_folds(summary: dict, path: Path) -> Path:
    rows = summary["folds"]
    with plot_to(path, (6, 3.2)) as axis:
        axis.bar(
            [str(r["fold"]) for r in rows], [100 * r["accuracy"] for r in rows], color="tab:blue"
        )
        axis.axhline(99.0, color="tab:red", linestyle="--", label="goal 99 %")
        axis.set_ylim(min(95.0, min(100 * r["accuracy"] for r in rows) - 1), 100.2)
        axis.set_xlabel("fold")
        axis.set_ylabel("test accuracy (%)")
        axis.set_title(f"preset {summary['preset']}: accuracy per fold (held-out fifth)")
        axis.legend(loc="lower right")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=REFERENCE_SET)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--only-folds", type=int, nargs="*", help="run only these fold numbers")
    parser.add_argument("--epochs", type=int, help="epoch budget (default: the preset's)")
    parser.add_argument("--time-limit", type=float, help="seconds of training per fold")
    parser.add_argument("--seed", type=int, default=42, help="training seed")
    parser.add_argument("--fold-seed", type=int, default=2024, help="seed of the fold assignment")
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "RESULTS.md")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)
    if args.data == REFERENCE_SET:
        require_reference_set()
    logging.basicConfig(level=logging.WARNING)
    summary = run(args)
    plot = plot_folds(summary, args.results.parent / f"crossval_{args.preset}.png")
    markdown = report_markdown(summary, plot)
    print(markdown)
    update_section(f"crossval-{args.preset}", markdown, args.results)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
