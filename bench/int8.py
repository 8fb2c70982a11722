"""Float against int8 on one run: validation accuracy and reading speed, side by side.

captcha-ocr export RUN_DIR --int8          # writes RUN_DIR/model.int8.onnx if it is kept
python bench/int8.py RUN_DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH_DIR, command_line, machine, table, update_section
from read_speed import measure

from captcha_ocr.data import read_labels_file
from captcha_ocr.evaluate import evaluate
from captcha_ocr.infer import Reader


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--single", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "RESULTS.md")
    args = parser.parse_args(argv)
    paths = {"float": args.run_dir / "model.onnx", "int8": args.run_dir / "model.int8.onnx"}
    for path in paths.values():
        if not path.is_file():
            sys.exit(f"{path} is missing; run: captcha-ocr export {args.run_dir} --int8")
    val = read_labels_file(args.run_dir / "val.csv")
    rng = np.random.default_rng(0)
    readers = {name: Reader.load(path, threads=1) for name, path in paths.items()}
    images = {
        name: rng.integers(
            0, 256, (args.batch, r.spec.height, r.spec.width, r.spec.channels)
        ).astype(np.float32)
        for name, r in readers.items()
    }
    speeds = measure(readers, images, args.single, args.batch, args.rounds)  # side by side
    rows = []
    for name, path in paths.items():
        accuracy = evaluate(Reader.load(path), val).accuracy
        p50, rate = speeds[name]
        rows.append(
            [
                name,
                f"{accuracy:.2%}",
                f"{p50:.3f}",
                f"{rate:.0f}",
                f"{path.stat().st_size / 1024:.0f} KB",
            ]
        )
        print(f"{name}: accuracy {accuracy:.2%}, p50 {p50:.3f} ms, {rate:.0f} img/s", flush=True)
    text = (
        f"### Float and int8 models of one run ({len(val)} validation images, 1 ONNX Runtime thread)\n\n"
        + table(["model", "validation accuracy", "p50 latency (ms)", "batched img/s", "size"], rows)
        + f"\n\nCommand: `{command_line()}`  \nMachine: {machine()}\n"
    )
    print(text)
    update_section("int8", text, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
