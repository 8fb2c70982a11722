"""How many keys does labeling take with `captcha-ocr label`, and how good is the model then?

A simulated person who knows the true labels drives `captcha-ocr label` through its JSON API
only. The set's images are copied under neutral names (img00000.png, ...) into a temporary
folder, without a fixed held-out fifth (chosen by the file name, the rule of
`real_sites.py`), which only ever measures the rounds' models. The person takes the queue's
next image: a correct suggestion costs one key (Enter), a wrong or missing one costs typing
the label and Enter (len + 1 keys). Like a person who wants better suggestions, they wait
for each round to end (and its suggestions to arrive) before going on. Per round: labels,
labels typed, keys pressed, wall time, and the exact accuracy of the round's model on the
held-out fifth. It stops at --target held-out accuracy, or at the label or time budget.

Today's way, without suggestions, types every label: its keys are the sum of len + 1 over
the same labels, and it would train the same models on the same labels, so its accuracy at
N typed labels is the round's accuracy at N labels (exact for --order random, the queue
without suggestions; the other orders pick other images). Wall time is the machine's only
(the app, the rounds, the waits): a person's typing time is what the keys measure.

    python bench/labeling.py                                  # captcha_images_v2, --order mix
    python bench/labeling.py --orders least most mix random   # compare the queue policies
    python bench/labeling.py --data ../shared/datasets/amazon --section labeling-amazon
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    BENCH_DIR,
    REFERENCE_SET,
    command_line,
    git_revision,
    machine,
    plot_to,
    table,
    update_section,
)
from real_sites import held_out

from captcha_ocr.data import Sample, find_samples
from captcha_ocr.evaluate import evaluate
from captcha_ocr.infer import Reader
from captcha_ocr.label.queue import ORDERS
from captcha_ocr.label.rounds import first_round_start

START_TIMEOUT_S = 120  # the app answers within this, or the run fails
POLL_S = 0.5


@dataclass
class Row:
    """The state of a session when one of its rounds has finished."""

    order: str
    round: int
    labels: int  # labels the round trained on (with its validation part)
    typed: int  # labels typed so far (wrong or missing suggestions)
    keys: int  # keys pressed so far
    keys_without: int  # keys to type every label so far, no suggestions
    wall_s: float  # since the app started
    train_s: float  # the round's own training time
    heldout: float | None  # exact accuracy on the held-out fifth
    val: float | None  # the round's accuracy on its own validation labels
    note: str = ""  # not usable / failed


class App:
    """`captcha-ocr label` in its own process, and the calls the person makes."""

    def __init__(self, images: Path, work: Path, flags: list[str]) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.log = work.with_suffix(".log")
        command = [sys.executable, "-m", "captcha_ocr", "label", str(images), "--out", str(work)]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [*command, "--port", str(port), *flags],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the app exited:\n{self.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the app did not answer:\n{self.log.read_text()[-3000:]}")
            try:
                self.client.get("/v1/status").raise_for_status()
                return
            except httpx.HTTPError:
                time.sleep(0.2)

    def get(self, path: str, **params) -> dict:
        response = self.client.get(path, params=params)
        response.raise_for_status()
        return response.json()

    def put(self, image_id: str, label: str) -> None:
        self.client.put(f"/v1/labels/{image_id}", json={"label": label}).raise_for_status()

    def wait_for_round(self) -> dict:
        """Wait until no round trains and the suggestions come from the latest model."""
        while True:
            status = self.get("/v1/status")
            state = status["round"]
            fresh = status["suggestions"]["model"] == state["model"] or state["model"] is None
            if state["state"] != "training" and fresh and not status["suggestions"]["refreshing"]:
                return status
            if self.process.poll() is not None:
                raise RuntimeError(f"the app exited:\n{self.log.read_text()[-3000:]}")
            time.sleep(POLL_S)

    def close(self) -> None:
        self.client.close()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def copy_neutral(samples: list[Sample], folder: Path, seed: int) -> dict[str, str]:
    """Copy the images under neutral names, in a seeded random order (names sorted by label
    would hint at it); {neutral name: true label}."""
    folder.mkdir(parents=True)
    samples = [samples[i] for i in np.random.default_rng(seed).permutation(len(samples))]
    truth = {}
    for i, sample in enumerate(samples):
        name = f"img{i:05d}{Path(sample.path).suffix.lower()}"
        shutil.copyfile(sample.path, folder / name)
        truth[name] = sample.label
    return truth


def label_session(args: argparse.Namespace, order: str, dev: list[Sample], test: list[Sample], work: Path) -> list[Row]:  # fmt: skip
    """One simulated person labeling with one queue order, until the stop rule."""
    truth = copy_neutral(dev, work / "images", args.seed)
    flags = ["--order", order, "--round-size", str(args.round_size), "--seed", str(args.seed)]
    flags += [f"--train-args={args.train_args}"]
    if args.first_round_args is not None:
        flags += [f"--first-round-args={args.first_round_args}"]
    started = time.monotonic()
    app = App(work / "images", work / "app", flags)
    rows: list[Row] = []
    typed = keys = keys_without = labels = 0
    rounds_seen = 0
    try:
        while labels < args.max_labels and time.monotonic() - started < args.time_budget:
            items = app.get("/v1/queue", limit=1)["items"]
            if not items:
                break
            item = items[0]
            label = truth[item["path"]]
            if item["suggestion"] == label:
                keys += 1
            else:
                typed, keys = typed + 1, keys + len(label) + 1
            keys_without += len(label) + 1
            app.put(item["id"], label)
            labels += 1
            status = app.get("/v1/status")
            if status["round"]["state"] != "training":
                continue
            status = app.wait_for_round()
            state = status["round"]
            if state["number"] == rounds_seen:  # the round failed
                rows.append(Row(order, rounds_seen + 1, labels, typed, keys, keys_without,
                                time.monotonic() - started, 0.0, None, None,
                                "failed: " + (state["error"] or "?").splitlines()[-1][:120]))  # fmt: skip
                continue
            rounds_seen = state["number"]
            accuracy = evaluate(Reader.load(state["model"], warn_not_usable=False), test).accuracy
            row = Row(order, rounds_seen, state["labels_used"], typed, keys, keys_without,
                      time.monotonic() - started, state["seconds"] or 0.0, accuracy,
                      state["accuracy"], "not usable" if state["warning"] else "")  # fmt: skip
            rows.append(row)
            print(json.dumps(asdict(row)), flush=True)
            if accuracy >= args.target:
                break
    finally:
        app.close()
    return rows


def plot(rows: list[Row], path: Path, target: float) -> None:
    with plot_to(path, (7, 4.2)) as axis:
        for order in dict.fromkeys(r.order for r in rows):
            mine = [r for r in rows if r.order == order and r.heldout is not None]
            line = axis.plot([r.typed for r in mine], [r.heldout for r in mine], "o-",
                             label=f"label, --order {order}")[0]  # fmt: skip
            axis.plot([r.labels for r in mine], [r.heldout for r in mine], "--",
                      color=line.get_color(), alpha=0.5, label=f"every label typed ({order})")  # fmt: skip
        axis.axhline(target, color="grey", lw=0.8)
        axis.set_xlabel("labels typed")
        axis.set_ylabel("exact accuracy, held-out fifth")
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)


def first_round(args: argparse.Namespace) -> str:
    """How round 1 started, in words for the table's caption."""
    if args.first_round_args is None:
        return shlex.join(first_round_start(None))
    return args.first_round_args or "(no flags: from scratch)"


def report(args: argparse.Namespace, rows: list[Row], dev: int, test: int, plot_path: Path) -> str:
    headers = ["order", "round", "labels", "typed", "keys", "keys w/o suggestions", "wall s",
               "train s", "held-out acc", "round val acc", "note"]  # fmt: skip
    body = [[r.order, r.round, r.labels, r.typed, r.keys, r.keys_without, f"{r.wall_s:.0f}",
             f"{r.train_s:.0f}", "-" if r.heldout is None else f"{r.heldout:.2%}",
             "-" if r.val is None else f"{r.val:.0%}", r.note] for r in rows]  # fmt: skip
    reached = []
    for order in args.orders:
        hit = next((r for r in rows if r.order == order and (r.heldout or 0) >= args.target), None)
        if hit is None:
            reached.append(f"- `--order {order}`: {args.target:.0%} not reached")
            continue
        reached.append(
            f"- `--order {order}`: {args.target:.0%} after {hit.typed} typed labels "
            f"({hit.labels} labels, {hit.keys} keys against {hit.keys_without} typing every "
            f"label), {hit.wall_s / 60:.1f} min"
        )
    return (
        f"## Labeling with suggestions: {args.data.name}\n\n"
        f"`{command_line()}` at {git_revision()}\n\n"
        f"Machine: {machine()}\n\n"
        f"{dev} images to label, {test} held out (sha1(name) % 5 == 0); rounds of "
        f"{args.round_size}; first round `{first_round(args)}`, every "
        f"round `{args.train_args or '(train defaults)'}`. Keys: a right suggestion 1, else "
        "len + 1. Without suggestions every label is typed (keys w/o suggestions) and the same "
        "labels train the same models.\n\n"
        + "\n".join(reached)
        + "\n\n"
        + table(headers, body)
        + f"\n\n![accuracy against labels typed]({os.path.relpath(plot_path, args.results.parent)})\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REFERENCE_SET, help="labeled images")
    parser.add_argument("--label-pattern", help="how the set's file names hold the labels")
    parser.add_argument("--orders", nargs="+", choices=ORDERS, default=["mix"])
    parser.add_argument("--round-size", type=int, default=50)
    parser.add_argument("--target", type=float, default=0.97, help="stop at this accuracy")
    parser.add_argument("--max-labels", type=int, default=10**9, help="label budget")
    parser.add_argument("--time-budget", type=float, default=1800, help="seconds per order")
    parser.add_argument("--train-args", default="", help="train flags of every round")
    parser.add_argument(
        "--first-round-args", help="train flags of round 1 (default: the app's, see label --help)"
    )
    parser.add_argument("--seed", type=int, default=0, help="the queue's order")
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "RESULTS.md")
    parser.add_argument("--section", default="labeling", help="RESULTS.md section name")
    parser.add_argument("--plot", type=Path, help="the PNG (default: bench/<section>.png)")
    parser.add_argument("--no-record", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        sys.exit(f"the data set is missing: {args.data} (see ../shared/datasets/README.md)")
    shlex.split(f"{args.train_args} {args.first_round_args or ''}")  # fail now on bad quoting
    samples = find_samples(args.data, args.label_pattern)
    dev = [s for s in samples if not held_out(Path(s.path).name)]
    test = [s for s in samples if held_out(Path(s.path).name)]
    rows: list[Row] = []
    for order in args.orders:
        with tempfile.TemporaryDirectory(prefix="captcha-labeling-") as tmp:
            rows += label_session(args, order, dev, test, Path(tmp))
    plot_path = args.plot or args.results.parent / f"{args.section}.png"
    plot(rows, plot_path, args.target)
    markdown = report(args, rows, len(dev), len(test), plot_path)
    print(markdown)
    if not args.no_record:
        update_section(args.section, markdown, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
