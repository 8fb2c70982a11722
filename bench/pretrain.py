"""How many real labels does a reader need for 95 % and 97 %, by where its weights start?

Three starts, side by side on the same nested subsets of real labeled images:

- ``none``: random weights (``train --init none``);
- ``synth``: pre-trained on synthetic look-alike captchas first (``--pretrain synth``);
- ``base``: fine-tuned from the base model shipped in the package (``--init base``).

The test part of the set is never used for any choice. On the reference set it is fold 0
of ``crossval.py`` (as in the earlier runs of this script, so their numbers compare); on any
other set (e.g. ``../shared/datasets/amazon``) it is the fixed fifth that ``real_sites.py``
holds out by a hash of the file name, and the set's labels are read as ``real_sites.SITES``
says (label pattern or labels file). Training draws nested subsets of the rest (the images
of the smallest subset are also in every larger one); for each size the starts train one
after the other, so machine noise hits them alike. No run is rescued (``rescue`` off): a
start stays what it says.

    python bench/pretrain.py                          # reference set, 25 ... 800 labels
    python bench/pretrain.py --sizes 50 100 200 --starts none synth
    python bench/pretrain.py --data ../shared/datasets/amazon --sizes 25 50 100 200
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
    git_revision,
    machine,
    plot_to,
    require_reference_set,
    table,
    update_section,
)
from crossval import fold_indices
from real_sites import SITES, Site, held_out

from captcha_ocr.basemodel import BASE_NAME
from captcha_ocr.config import INIT_NONE, resolve_train_config
from captcha_ocr.data import Sample, find_samples, write_samples_csv
from captcha_ocr.errors import CaptchaOCRError

# What each start sets on top of the preset (TrainConfig.init "auto" would pick the base
# model for the default preset, so "none" must say so).
STARTS = {
    "none": {"init": INIT_NONE},
    "synth": {"pretrain": "synth"},  # init "auto" resolves to none when a run pre-trains
    "base": {"init": BASE_NAME},
}
START_LABELS = {"none": "random weights", "synth": "--pretrain synth", "base": "--init base"}
REFERENCE_SECTION = "pretrain"  # the section (and plot) of the reference set's earlier runs


def is_reference(data: Path) -> bool:
    return data.resolve() == REFERENCE_SET.resolve()


def set_samples(data: Path) -> list[Sample]:
    """Every labeled image of ``data``, labelled as ``real_sites.py`` (and a user) would."""
    name = data.resolve().name
    site = next((s for s in SITES if s.name == name), Site(name))
    source = data / site.labels_file if site.labels_file else data
    return find_samples(source, site.label_pattern)


def split(samples: list[Sample], data: Path, fold_seed: int) -> tuple[list, list, str]:
    """``(pool to train from, test part, how the test part was chosen)``."""
    if is_reference(data):
        test_index = set(fold_indices(len(samples), 5, fold_seed)[0].tolist())
        test = [s for i, s in enumerate(samples) if i in test_index]
        pool = [s for i, s in enumerate(samples) if i not in test_index]
        return pool, test, f"fold 0 of crossval.py (fold seed {fold_seed})"
    test = [s for s in samples if held_out(Path(s.path).name)]
    pool = [s for s in samples if not held_out(Path(s.path).name)]
    return pool, test, "the fifth that real_sites.py holds out by file-name hash"


def overrides_for(start: str, args: argparse.Namespace) -> dict:
    return {
        "seed": args.seed,
        "epochs": args.epochs,
        "pretrain_images": args.pretrain_images,
        "pretrain_epochs": args.pretrain_epochs,
        "rescue": False,
        **STARTS[start],
    }


def train_and_test(csv: Path, test: list[Sample], start: str, args, work: Path) -> dict:
    """Train one start on the subset in ``csv``, read the test part; one row of results."""
    from captcha_ocr.evaluate import evaluate
    from captcha_ocr.export import export_run
    from captcha_ocr.infer import Reader
    from captcha_ocr.train import train

    config = resolve_train_config(args.preset, cli_overrides=overrides_for(start, args))
    started = time.perf_counter()
    result = train(csv, work / "runs", config, progress=False)
    seconds = time.perf_counter() - started  # pre-training included
    export_run(result.run_dir)
    report = evaluate(Reader.load(result.run_dir), test)
    return {
        "start": start,
        "accuracy": report.accuracy,
        "cer": report.cer,
        "epochs": result.state.epochs_done,
        "seconds": seconds,
    }


def run(args: argparse.Namespace, pool: list[Sample], test: list[Sample]) -> list[dict]:
    order = np.random.default_rng(args.seed).permutation(len(pool))  # nested subsets
    rows = []
    with tempfile.TemporaryDirectory(prefix="captcha-bench-") as tmp:
        for size in sorted({min(size, len(pool)) for size in args.sizes}):
            chosen = [pool[i] for i in order[:size]]
            csv = Path(tmp) / f"train_{len(chosen)}.csv"
            write_samples_csv(csv, chosen)
            for start in args.starts:
                row = {"images": len(chosen), **train_and_test(csv, test, start, args, Path(tmp))}
                rows.append(row)
                print(
                    f"{row['images']} labels, {start}: accuracy {row['accuracy']:.2%}, "
                    f"CER {row['cer']:.4f}, {row['epochs']} epochs, {row['seconds']:.0f} s",
                    flush=True,
                )
                if args.log:
                    with open(args.log, "a", encoding="utf-8") as log:
                        log.write(json.dumps(row) + "\n")
    return rows


def fewest_to_reach(rows: list[dict], start: str, goal: float) -> str:
    """The fewest labels with which ``start`` reached ``goal``, and its minutes.

    >>> rows = [{"images": 50, "start": "base", "accuracy": 0.96, "seconds": 90},
    ...         {"images": 100, "start": "base", "accuracy": 0.99, "seconds": 150}]
    >>> fewest_to_reach(rows, "base", 0.95), fewest_to_reach(rows, "base", 0.995)
    ('50 (1.5 min)', 'more than 100')
    """
    mine = [r for r in rows if r["start"] == start]
    reached = [r for r in mine if r["accuracy"] >= goal]
    if not reached:
        return f"more than {max(r['images'] for r in mine)}"
    best = min(reached, key=lambda r: r["images"])
    return f"{best['images']} ({best['seconds'] / 60:.1f} min)"


def report_markdown(rows: list[dict], args: argparse.Namespace, plot: Path | None) -> str:
    headline = table(
        ["goal", *(f"`{s}` ({START_LABELS[s]})" for s in args.starts)],
        [
            [f"{goal:.0%}", *(fewest_to_reach(rows, s, goal) for s in args.starts)]
            for goal in args.goals
        ],
    )
    body = table(
        ["real labels", "start", "test accuracy", "CER", "epochs", "train s"],
        [
            [
                r["images"],
                r["start"],
                f"{r['accuracy']:.2%}",
                f"{r['cer']:.4f}",
                r["epochs"],
                f"{r['seconds']:.0f}",
            ]
            for r in rows
        ],
    )
    pretrain = ""
    if "synth" in args.starts:
        pretrain = (
            f" `synth` pre-trains on {args.pretrain_images} synthetic captchas for "
            f"{args.pretrain_epochs} epochs (its time is included in train s)."
        )
    if "base" in args.starts:
        pretrain += (
            " `base` fine-tunes the base model shipped in the package (made once, by "
            "scripts/make_base_model.py; that time is not counted)."
        )
    text = (
        f"### Real labels needed on {args.set_name}, by where the weights start\n\n"
        f"Test set: {args.test_count} images, {args.test_how}; never used for any choice. "
        f"Training: nested subsets of the other {args.pool_count} images, preset "
        f"`{args.preset}`, seed {args.seed}, no rescue; 10 % of each subset is its "
        f"validation split.{pretrain}\n\n"
        f"Fewest real labels that reached each goal (of the sizes tried), and the minutes "
        f"that training took:\n\n{headline}\n\n{body}\n\n"
        f"Command: `{command_line()}` at {git_revision()}  \nMachine: {machine()}\n"
    )
    if plot is not None:
        text += f"\n![accuracy against real labels]({plot.name})\n"
    return text


def plot_rows(rows: list[dict], args: argparse.Namespace, path: Path) -> Path:
    with plot_to(path, (6, 3.4)) as axis:
        for start in args.starts:
            mine = [r for r in rows if r["start"] == start]
            axis.plot(
                [r["images"] for r in mine],
                [100 * r["accuracy"] for r in mine],
                "o-",
                label=START_LABELS[start],
            )
        for goal, color in zip(args.goals, ("tab:red", "tab:purple", "tab:brown", "tab:gray")):
            axis.axhline(100 * goal, color=color, linestyle="--", linewidth=1, label=f"{goal:.0%}")
        axis.set_xscale("log")
        sizes = sorted({r["images"] for r in rows})
        axis.set_xticks(sizes, [str(size) for size in sizes], minor=False)
        axis.minorticks_off()
        axis.set_xlabel("real labeled training images")
        axis.set_ylabel("test accuracy (%)")
        axis.set_title(f"{args.set_name}, held-out part")
        axis.legend(loc="lower right", fontsize="small")
    return path


def check_starts(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The base model exists for one network only: refuse ``base`` for another preset."""
    if "base" not in args.starts:
        return
    from captcha_ocr.warmstart import init_spec

    try:
        base_preset = init_spec(BASE_NAME).preset
    except CaptchaOCRError as error:
        parser.error(f"--starts base: {error}")
    if base_preset != args.preset:
        parser.error(
            f"--starts base: the base model is a {base_preset!r} network and --preset is "
            f"{args.preset!r}; give --preset {base_preset} or leave base out of --starts"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=REFERENCE_SET, help="a folder of real labeled captchas"
    )
    parser.add_argument(
        "--starts",
        nargs="+",
        choices=list(STARTS),
        default=list(STARTS),
        help="where the weights start: none (random), synth (--pretrain synth), base "
        "(--init base); default: all three, side by side",
    )
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[25, 50, 100, 200, 400, 800],
        help="real labeled images to train on, one training per size and start",
    )
    parser.add_argument(
        "--goals",
        type=float,
        nargs="+",
        default=[0.95, 0.97],
        help="test accuracies the headline gives the fewest labels for",
    )
    parser.add_argument("--preset", default="default", help="base needs the default preset")
    parser.add_argument("--epochs", type=int, help="epoch budget (default: the automatic one)")
    parser.add_argument("--pretrain-images", type=int, default=4000)
    parser.add_argument("--pretrain-epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=42, help="seeds the subsets and training")
    parser.add_argument("--fold-seed", type=int, default=2024, help="as in crossval.py")
    parser.add_argument(
        "--section",
        help=f"RESULTS.md section, also the plot's name (default: {REFERENCE_SECTION!r} for "
        "the reference set, labels-needed-SET for another)",
    )
    parser.add_argument(
        "--results", type=Path, default=BENCH_DIR / "RESULTS.md", help="the plot goes beside it"
    )
    parser.add_argument("--no-record", action="store_true", help="write no RESULTS.md, no plot")
    parser.add_argument("--log", type=Path, help="append each row as a JSON line here")
    args = parser.parse_args(argv)
    if any(size < 2 for size in args.sizes):
        parser.error("--sizes: each size must be >= 2 (a training and a validation image)")
    if any(not 0 <= goal <= 1 for goal in args.goals):
        parser.error("--goals: accuracies between 0 and 1, e.g. 0.95 0.97")
    args.goals = sorted(set(args.goals))
    args.starts = list(dict.fromkeys(args.starts))
    check_starts(parser, args)
    if is_reference(args.data):
        require_reference_set(args.data)
    elif not args.data.is_dir():
        parser.error(f"--data {args.data}: not a folder (see ../shared/datasets/README.md)")
    args.set_name = args.data.resolve().name
    if args.section is None:
        reference = is_reference(args.data)
        args.section = REFERENCE_SECTION if reference else f"labels-needed-{args.set_name}"
    logging.basicConfig(level=logging.WARNING)

    pool, test, args.test_how = split(set_samples(args.data), args.data, args.fold_seed)
    args.test_count, args.pool_count = len(test), len(pool)
    try:
        rows = run(args, pool, test)
    except CaptchaOCRError as error:
        sys.exit(f"error: {error}")
    plot = None
    if not args.no_record:
        plot = plot_rows(rows, args, args.results.parent / f"{args.section}.png")
    markdown = report_markdown(rows, args, plot)
    print(markdown)
    if not args.no_record:
        update_section(args.section, markdown, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
