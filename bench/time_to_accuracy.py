"""Side by side on one split: how fast does each preset reach a validation CER?

Trains the `default` preset (its own recipe) and the `reference` preset (the tutorial's
recipe: Adam 1e-3, batch 64, reduce-on-plateau, early stopping 40) on the same 90/10 split,
one after the other in the same process, and reads their history.csv: seconds per epoch and
wall-clock seconds until validation CER first reaches 0.05, 0.02 and 0.007.

    python bench/time_to_accuracy.py --reference-time-limit 2400
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

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

from captcha_ocr.config import resolve_train_config
from captcha_ocr.data import find_samples, split_samples, write_samples_csv
from captcha_ocr.train import train

THRESHOLDS = (0.05, 0.02, 0.007)


def first_time_below(history: list[dict], threshold: float) -> tuple[float, int] | None:
    for row in history:
        if row["val_cer"] <= threshold:
            return row["elapsed_s"], int(row["epoch"])
    return None


def run_preset(preset: str, data: Path, out: Path, overrides: dict) -> dict:
    config = resolve_train_config(preset, cli_overrides=overrides)
    result = train(data, out, config, progress=False)
    history = result.history
    epochs = len(history)
    return {
        "preset": preset,
        "epochs": epochs,
        "seconds": history[-1]["elapsed_s"],
        "seconds_per_epoch": history[-1]["elapsed_s"] / max(1, epochs),
        "best_cer": result.state.best_cer,
        "stop": result.state.stop_reason,
        "to": {str(t): first_time_below(history, t) for t in THRESHOLDS},
        "curve": [(row["elapsed_s"], row["val_cer"]) for row in history],
    }


def plot(runs: list[dict], path: Path) -> Path:
    with plot_to(path, (7, 3.8)) as axis:
        for run in runs:
            xs, ys = zip(*run["curve"])
            axis.plot(xs, [max(y, 1e-3) for y in ys], label=run["preset"])
        axis.axhline(0.007, color="grey", linestyle="--", label="CER 0.007 (tutorial)")
        axis.set_yscale("log")
        axis.set_xscale("log")
        axis.set_xlabel("wall-clock training seconds (2 cores)")
        axis.set_ylabel("validation CER (0 drawn at 0.001)")
        axis.set_title("validation CER against training time, same split")
        axis.legend()
        axis.grid(alpha=0.3, which="both")
    return path


def comparison(default: dict, reference: dict) -> str:
    """Sentences comparing the two presets' times to each CER threshold."""
    lines = []
    for threshold in THRESHOLDS:
        fast, slow = default["to"][str(threshold)], reference["to"][str(threshold)]
        if fast and slow:
            lines.append(
                f"To CER {threshold}: default {fast[0]:.0f} s, reference {slow[0]:.0f} s, "
                f"**{slow[0] / fast[0]:.1f}x sooner**."
            )
        elif fast:
            lines.append(
                f"To CER {threshold}: default {fast[0]:.0f} s; the reference never got there in its "
                f"{reference['seconds']:.0f} s run (best {reference['best_cer']:.4f}): the default "
                f"needed **1/{reference['seconds'] / fast[0]:.0f}** of that time."
            )
    ratio = default["seconds_per_epoch"] / reference["seconds_per_epoch"]
    lines.append(
        f"An epoch of the default preset takes {ratio:.2f}x the time of a reference epoch."
    )
    return "  \n".join(lines)


def fmt(hit: tuple[float, int] | None) -> str:
    return "not reached" if hit is None else f"{hit[0]:.0f} s (epoch {hit[1]})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=REFERENCE_SET)
    parser.add_argument("--presets", nargs="+", default=["default", "reference"])
    parser.add_argument(
        "--reference-time-limit",
        type=float,
        default=2400.0,
        help="cap on the reference preset's training seconds",
    )
    parser.add_argument("--default-epochs", type=int, help="epoch budget of the default preset")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "RESULTS.md")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.data == REFERENCE_SET:
        require_reference_set()
    logging.basicConfig(level=logging.WARNING)
    samples = find_samples(args.data)
    train_samples, val_samples = split_samples(samples, 0.1, args.seed)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        # The same split for every preset: a CSV of all samples and the same seed.
        data_csv = Path(tmp) / "all.csv"
        write_samples_csv(data_csv, samples)
        for preset in args.presets:
            overrides = {"seed": args.seed}
            if preset == "reference":
                overrides["time_limit"] = args.reference_time_limit
            elif args.default_epochs:
                overrides["epochs"] = args.default_epochs
            run = run_preset(preset, data_csv, Path(tmp) / preset, overrides)
            runs.append(run)
            print(
                f"{preset}: {run['epochs']} epochs, {run['seconds_per_epoch']:.2f} s/epoch, "
                f"best CER {run['best_cer']:.4f}, "
                + ", ".join(f"CER {t}: {fmt(run['to'][str(t)])}" for t in THRESHOLDS),
                flush=True,
            )
    image = plot(runs, args.results.parent / "time_to_accuracy.png")
    rows = [
        [
            r["preset"],
            r["epochs"],
            f"{r['seconds_per_epoch']:.2f}",
            f"{r['best_cer']:.4f}",
            *[fmt(r["to"][str(t)]) for t in THRESHOLDS],
            r["stop"],
        ]
        for r in runs
    ]
    text = (
        f"### Time to accuracy, same split ({len(train_samples)} train / {len(val_samples)} validation, seed {args.seed})\n\n"
        + table(
            [
                "preset",
                "epochs",
                "s/epoch",
                "best val CER",
                *[f"time to CER {t}" for t in THRESHOLDS],
                "stopped by",
            ],
            rows,
        )
    )
    by_name = {r["preset"]: r for r in runs}
    if {"default", "reference"} <= set(by_name):
        text += "\n\n" + comparison(by_name["default"], by_name["reference"])
    text += f"\n\nCommand: `{command_line()}`  \nMachine: {machine()}\n\n![validation CER against time]({image.name})\n"
    print(text)
    update_section("time-to-accuracy", text, args.results)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
