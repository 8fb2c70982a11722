"""Training time of a small set against another commit, side by side in one run.

A small set's epoch is a few optimizer steps, so what the run does after each epoch
(validate, write checkpoints) can cost more than its training. This trains the same
synthetic set (default settings: from the base model) with this tree's package and with
the package of ``--against`` (a commit, checked out into a temporary git worktree), one after
the other, ``--rounds`` times, and prints seconds, the best validation CER and the ratio.

    python bench/small_set_speed.py --against 8fd65e7
    python bench/small_set_speed.py --against HEAD~3 --images 200 --epochs 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH_DIR, command_line, git_revision, machine, table, update_section

REPO = BENCH_DIR.parent

# Run in a child process with one tree's package first on the path; prints one JSON line.
TRAIN_ONE = """
import json, sys, time
from captcha_ocr.config import resolve_train_config
from captcha_ocr.train import train
config = resolve_train_config(cli_overrides={"epochs": int(sys.argv[3]), "seed": 0})
started = time.perf_counter()
result = train(sys.argv[1], sys.argv[2], config, progress=False)
print(json.dumps({"seconds": time.perf_counter() - started, "epochs": result.state.epochs_done,
                  "best_cer": result.state.best_cer}))
"""


def train_with(source: Path, data: Path, out: Path, epochs: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(source)}
    command = [sys.executable, "-c", TRAIN_ONE, str(data), str(out), str(epochs)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        sys.exit(f"training with {source} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--against", required=True, help="the commit to compare with")
    parser.add_argument("--images", type=int, default=50, help="synthetic images (default 50)")
    parser.add_argument("--epochs", type=int, default=40, help="epochs a run (default 40)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each (default 2)")
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "RESULTS.md")
    parser.add_argument("--no-record", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args(argv)
    from captcha_ocr.config import resolve_train_config
    from captcha_ocr.synth import synthesize

    config = resolve_train_config()  # the defaults both commits' runs start from (this tree's)

    with tempfile.TemporaryDirectory(prefix="small-set-speed-") as tmp:
        work = Path(tmp)
        synthesize(work / "data", args.images, "2345678bcdefgmnpwxy", (5, 5), (200, 50), seed=0)
        old_tree = work / "against"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-q", str(old_tree), args.against],
            cwd=REPO,
            check=True,
        )
        try:
            trees = {args.against: old_tree / "src", git_revision(): REPO / "src"}
            runs: dict[str, list[dict]] = {name: [] for name in trees}
            for round_ in range(args.rounds):
                for name, source in trees.items():
                    out = work / f"runs-{round_}-{len(runs[name])}-{source.parent.name}"
                    run = train_with(source, work / "data", out, args.epochs)
                    runs[name].append(run)
                    print(f"{name}: {run['seconds']:.1f} s, best CER {run['best_cer']:.4f}")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old_tree)], cwd=REPO)
    mean = {name: statistics.fmean(r["seconds"] for r in rs) for name, rs in runs.items()}
    base = mean[args.against]
    rows = [
        [name, " / ".join(f"{r['seconds']:.1f}" for r in rs), f"{mean[name]:.1f}",
         f"{mean[name] / base:.2f}", " / ".join(f"{r['best_cer']:.4f}" for r in rs)]
        for name, rs in runs.items()
    ]  # fmt: skip
    markdown = "\n".join([
        "## Training time of a small set (small-set-speed)",
        "",
        f"`{command_line()}`; {machine()}.",
        f"{args.images} synthetic 200x50 captchas ({config.val_fraction:.0%} of them for "
        f"validation, batches of {config.batch_size}), {args.epochs} epochs from the base "
        "model, each commit's package in turn, in one run.",
        "",
        table(["commit", "seconds per run", "mean s", "ratio", "best val CER"], rows),
    ])  # fmt: skip
    print(markdown)
    if not args.no_record:
        update_section("small-set-speed", markdown, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
