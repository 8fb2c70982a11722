"""Reading speed with ONNX Runtime on the CPU: single-image latency and batched throughput.

Measures the exported models of the `default` and `reference` presets (weights do not change
the network's speed, so fresh ones are exported unless run folders are given; their reads are
kept on the greedy decoding that trained models take, see `export_fresh`), with 1 and 2
threads, in one run, the models taking turns read by read so that machine noise hits all
alike.

    python bench/read_speed.py
    python bench/read_speed.py --runs default=runs/A reference=runs/B
    python bench/read_speed.py --runs "full convs=old/default.onnx"   # a third model beside

Names other than ``default`` and ``reference`` add a model, measured beside the two and
compared with ``default``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH_DIR, command_line, machine, table, update_section

from captcha_ocr.charset import DEFAULT_CHARSET
from captcha_ocr.config import ModelSpec
from captcha_ocr.infer import Reader, resolve_model_path
from captcha_ocr.sizes import ImageSize


def export_fresh(
    preset: str, folder: Path, size: ImageSize, unfolded: bool = False
) -> dict[str, tuple[Path, int]]:
    """A fresh model of ``preset`` exported to ``folder``: ``{name: (path, parameters)}``;
    with ``unfolded``, the same weights exported once more with the pixel scaling as a step
    of its own (what every export did before the scaling was folded into the first kernels)."""
    from captcha_ocr.export import export_model
    from captcha_ocr.model import build_model, time_steps

    channels = 3 if preset == "reference" else 1
    model = build_model(ModelSpec(preset, DEFAULT_CHARSET, size.height, size.width, channels, 5))
    # Declared to read every length, so that the file itself reads noise greedily (see
    # greedy_on_noise), also where a reader is made from it elsewhere (serve_load.py's server).
    spec = ModelSpec(preset, DEFAULT_CHARSET, size.height, size.width, channels, time_steps(model))
    exports = {preset: (export_model(model, spec, folder / f"{preset}.onnx"), model.count_params())}
    if unfolded:
        path = export_model(model, spec, folder / f"{preset}-unfolded.onnx", fold_scaling=False)
        exports[f"{preset}, scaling unfolded"] = (path, model.count_params())
    return exports


def greedy_on_noise(reader: Reader) -> Reader:
    """``reader`` with every text length allowed. The bench reads noise, which every model,
    fresh or trained, reads as random text of any length; held to the trained lengths, most of
    those reads would take the slow length-held decoding (decode.length_decode, ~1.5 ms),
    which a trained model's reads of its own style almost never need (a trained
    captcha_images_v2 run read in 4.4 ms that way, 1.65 ms greedily: section
    read-speed-trained-runs)."""
    spec = reader.spec
    steps = reader.log_probs(np.zeros((1, spec.height, spec.width, spec.channels))).shape[1]
    reader.spec = dataclasses.replace(spec, min_label_length=0, max_label_length=steps)
    return reader


def parse_size(text: str) -> ImageSize:
    """``"256x64"`` -> ``ImageSize(256, 64)``."""
    width, _, height = text.partition("x")
    return ImageSize(int(width), int(height))


def count_params(onnx_path: Path) -> int:
    import onnx

    proto = onnx.load(str(onnx_path))
    return int(sum(np.prod(t.dims) for t in proto.graph.initializer))


def measure(
    readers: dict[str, Reader], images: dict[str, np.ndarray], single: int, batch: int, rounds: int
) -> dict[str, tuple[float, float]]:
    """``{name: (p50 single-image latency in ms for preprocessed input + decode, batched
    images/s)}``. The models take turns read by read and batch by batch, so that a change in
    the machine's load (these machines are shared) falls on all of them alike."""
    latencies: dict[str, list[float]] = {name: [] for name in readers}
    elapsed = dict.fromkeys(readers, 0.0)
    for name, reader in readers.items():
        for _ in range(20):
            reader.decode(reader.log_probs(images[name][:1]))
        reader.decode(reader.log_probs(images[name][:batch]))
    for i in range(single):
        for name, reader in readers.items():
            one = images[name][i % len(images[name])][None]
            started = time.perf_counter()
            reader.decode(reader.log_probs(one))
            latencies[name].append(time.perf_counter() - started)
    for _ in range(rounds):
        for name, reader in readers.items():
            started = time.perf_counter()
            reader.decode(reader.log_probs(images[name][:batch]))
            elapsed[name] += time.perf_counter() - started
    return {
        name: (1000 * statistics.median(latencies[name]), rounds * batch / elapsed[name])
        for name in readers
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--runs",
        nargs="*",
        default=[],
        help="NAME=RUN_DIR_OR_ONNX pairs: default and reference replace the fresh models, "
        "other names add a model",
    )
    parser.add_argument("--single", type=int, default=1000, help="single-image reads per setting")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=20, help="batched calls per setting")
    parser.add_argument(
        "--default-size",
        type=parse_size,
        default=ImageSize(200, 50),
        metavar="WxH",
        help="input size of the fresh default model (default 200x50, the reference set's own "
        "size, which a default run keeps); the reference model is always 200x50",
    )
    parser.add_argument(
        "--unfolded",
        action="store_true",
        help="also measure the fresh default model exported with its pixel scaling unfolded "
        "(a multiply over the input, as exports were before)",
    )
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "RESULTS.md")
    parser.add_argument("--section", default="read-speed", help="RESULTS.md section name")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    given = dict(item.split("=", 1) for item in args.runs)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models = {}
        for name in dict.fromkeys(["default", "reference", *given]):  # the two first
            if name in given:
                path = resolve_model_path(given[name])
                models[name] = (path, count_params(path))
            else:
                size = args.default_size if name == "default" else ImageSize(200, 50)
                unfolded = args.unfolded and name == "default"
                models.update(export_fresh(name, Path(tmp), size, unfolded))
        results = {}
        rng = np.random.default_rng(0)
        for threads in (1, 2):
            readers = {
                name: greedy_on_noise(Reader.load(path, threads=threads))
                for name, (path, _) in models.items()
            }
            default_size = readers["default"].spec.input_size
            images = {
                name: rng.integers(
                    0, 256, (args.batch, r.spec.height, r.spec.width, r.spec.channels)
                ).astype(np.float32)
                for name, r in readers.items()
            }
            measured = measure(readers, images, args.single, args.batch, args.rounds)
            for name, (p50, rate) in measured.items():
                results[name, threads] = p50, rate
                print(f"{name} threads={threads}: p50 {p50:.3f} ms, {rate:.0f} img/s", flush=True)
        for name, (path, params) in models.items():
            for threads in (1, 2):
                p50, rate = results[name, threads]
                rows.append(
                    [
                        name,
                        threads,
                        f"{p50:.3f}",
                        f"{rate:.0f}",
                        f"{params:,}",
                        f"{path.stat().st_size / 1024:.0f} KB",
                    ]
                )
    ratios = []
    for threads in (1, 2):
        d, r = results["default", threads], results["reference", threads]
        ratios.append(
            f"{threads} thread(s): latency {r[0] / d[0]:.1f}x lower, throughput {d[1] / r[1]:.1f}x higher"
        )
    for other in models:
        if other in ("default", "reference"):
            continue
        ratios += [
            f"default against {other}, {threads} thread(s): latency "
            f"{results[other, threads][0] / results['default', threads][0]:.2f}x lower, "
            f"throughput {results['default', threads][1] / results[other, threads][1]:.2f}x "
            "higher"
            for threads in (1, 2)
        ]
    text = (
        "### Reading speed (ONNX Runtime, CPU)\n\n"
        f"Latency: one preprocessed image (default model {default_size}, reference "
        "200x50) through the model and greedy CTC decoding, median "
        f"of {args.single}. Throughput: batches of {args.batch}, model + decoding. The models "
        "take turns read by read and batch by batch.\n\n"
        + table(
            ["model", "threads", "p50 latency (ms)", "batched img/s", "parameters", "ONNX size"],
            rows,
        )
        + "\n\nMeasured in the same run, default against reference: "
        + "; ".join(ratios)
        + "."
        + f"\n\nCommand: `{command_line()}`  \nMachine: {machine()}\n"
    )
    print(text)
    update_section(args.section, text, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
