"""Bulk reading: plain `predict` (Reader.read_batch, 1 and 2 ONNX Runtime threads) against
`predict --engine ray` on a local Ray with 2 CPUs, on the same synthesized captchas (10,000 by
default, plus a few unreadable files), side by side in one run.

Per core is measured from CPU time, not from the wall clock: the CPU seconds that the reading
process (plain) or the driver and every Ray process under it (ray) spent, read from /proc. So a
busy machine stretches the wall clock but not the per-core rate, and overhead per image is the
extra CPU time Ray spends per image over plain predict on one thread.

    python bench/bulk.py --model runs/latest     # a run folder (make demo) or an .onnx file
    python bench/bulk.py --fresh default         # a preset's untrained weights: same speed
    python bench/bulk.py                         # tests/tiny_reader.onnx (a toy: see the note)
    python bench/bulk.py --fresh default --images /tmp/bulk-images --results bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import concurrent.futures
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import command_line, git_revision, machine, table, update_section

from captcha_ocr.bulk import read_dataset
from captcha_ocr.bulk_io import list_images
from captcha_ocr.infer import Reader

TINY_READER = Path(__file__).resolve().parents[1] / "tests" / "tiny_reader.onnx"
CHUNK = 1000  # images per synthesis job (one folder each, its own seed)
SMALL_JOB = 256  # images of the Ray job that measures Ray's fixed cost per job
# Unreadable files added to the set: each must come back as an error row, from both engines.
BAD_FILES = {
    "truncated.png": lambda png: png[: len(png) // 2],
    "text.png": lambda _: b"not an image\n",
    "empty.jpg": lambda _: b"",
}


def _draw(folder: Path, count: int, seed: int) -> None:
    from captcha_ocr.synth import synthesize

    synthesize(folder, count, seed=seed)


def make_images(root: Path, count: int, workers: int) -> list[str]:
    """``count`` distinct captchas (drawn by ``captcha_ocr.synth``, in folders of CHUNK, each
    with its own seed; folders already complete are kept) plus :data:`BAD_FILES`."""
    jobs = []
    for start in range(0, count, CHUNK):
        folder, size = root / f"chunk{start // CHUNK:03d}", min(CHUNK, count - start)
        if not folder.is_dir() or len(list(folder.glob("*.png"))) != size:
            jobs.append((folder, size, 1000 + start // CHUNK))
    if jobs:
        print(f"drawing {sum(j[1] for j in jobs)} captchas into {root} ...", flush=True)
        with concurrent.futures.ProcessPoolExecutor(workers) as pool:
            for future in [pool.submit(_draw, *job) for job in jobs]:
                future.result()
    good = list_images([str(root / "chunk*" / "*.png")])
    bad = root / "bad"
    bad.mkdir(exist_ok=True)
    png = Path(good[0]).read_bytes()
    for name, make in BAD_FILES.items():
        (bad / name).write_bytes(make(png))
    return good + list_images([str(bad)])


def _cpu_seconds(pid: int) -> float | None:
    """CPU time of ``pid`` (not of its reaped children: the poll has counted them already),
    from /proc; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _descendants(root: int) -> set[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


class ProcessTreeCPU:
    """CPU seconds spent by this process and every process under it (Ray's raylet, workers,
    actors) while the block runs: /proc polled every ``interval`` s, the last reading per
    process kept, so actors that exit still count (up to one interval)."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval, self.seconds = interval, 0.0
        self._stop = threading.Event()
        self._own = 0.0  # the polling thread's CPU time, left out of the count

    def _poll(self) -> dict[int, float]:
        readings = {}
        for pid in {os.getpid(), *_descendants(os.getpid())}:
            value = _cpu_seconds(pid)
            if value is not None:
                readings[pid] = value
        return readings

    def __enter__(self) -> ProcessTreeCPU:
        self._start = self._poll()
        self._last = dict(self._start)
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self._last.update(self._poll())
        self._own = time.thread_time()

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._last.update(self._poll())
        spent = sum(v - self._start.get(pid, 0.0) for pid, v in self._last.items())
        self.seconds = spent - self._own


def run_plain(model: Path, paths: list[str], threads: int, batch: int) -> tuple[float, float, dict]:
    """(wall s, CPU s, path -> (text, error)) of Reader.read_batch, as `predict` reads."""
    reader = Reader.load(model, threads=threads)
    reader.read_batch(paths[:batch], batch_size=batch, skip_errors=True)  # warm up
    cpu, started = os.times(), time.perf_counter()
    found = reader.read_batch(paths, batch_size=batch, skip_errors=True)
    wall, ended = time.perf_counter() - started, os.times()
    cpu_s = (ended.user - cpu.user) + (ended.system - cpu.system)
    return wall, cpu_s, {p: (f.text, f.error) for p, f in zip(paths, found)}


def run_ray(model: Path, paths: list[str], batch: int, out: Path) -> tuple[float, float, dict]:
    """(wall s, CPU s of the whole process tree, path -> (text, error)) of `--engine ray`:
    actor start, model load, reading and the Parquet shards, as a user's job runs."""
    import pyarrow.parquet as pq

    shutil.rmtree(out, ignore_errors=True)
    listing = out.with_suffix(".txt")
    listing.write_text("".join(p + "\n" for p in paths))
    with ProcessTreeCPU() as cpu:
        started = time.perf_counter()
        summary = read_dataset(model, str(listing), out=out, batch_size=batch)
        wall = time.perf_counter() - started
    rows = pq.read_table(out).to_pylist()
    assert summary.count == len(rows) == len(paths), (summary.count, len(rows), len(paths))
    return wall, cpu.seconds, {r["path"]: (r["text"], r["error"]) for r in rows}


def fresh_model(preset: str, folder: Path) -> Path:
    from read_speed import export_fresh

    return export_fresh(preset, folder)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model", type=Path, help="run folder or .onnx (default: the tiny reader)")
    which.add_argument("--fresh", metavar="PRESET", help="export a preset's untrained weights")
    parser.add_argument("--count", type=int, default=10_000, help="captchas (default 10,000)")
    parser.add_argument("--images", type=Path, help="keep the captchas here (reused if complete)")
    parser.add_argument("--cpus", type=int, default=2, help="the local Ray's CPUs (default 2)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--results", type=Path, help="also write the table into this RESULTS.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    load = os.getloadavg()[0]
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = args.model or (fresh_model(args.fresh, tmp) if args.fresh else TINY_READER)
        spec = Reader.load(model).spec
        paths = make_images(args.images or tmp / "images", args.count, args.cpus)
        started = time.perf_counter()
        ray_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths
        ray.init(num_cpus=args.cpus, include_dashboard=False, _temp_dir=ray_dir)
        ray_start = time.perf_counter() - started
        try:
            results = {
                "plain, 1 thread": (1, run_plain(model, paths, 1, args.batch_size)),
                "plain, 2 threads": (2, run_plain(model, paths, 2, args.batch_size)),
                f"ray, {args.cpus} CPUs": (
                    args.cpus,
                    run_ray(model, paths, args.batch_size, tmp / "rows.parquet"),
                ),
            }
            # A small job, to split Ray's cost into a fixed part per job and one per image.
            small = paths[: min(len(paths) // 2, SMALL_JOB)]
            small_wall, small_cpu, _ = run_ray(model, small, args.batch_size, tmp / "s.parquet")
        finally:
            ray.shutdown()
            shutil.rmtree(ray_dir, ignore_errors=True)
    reference = results["plain, 1 thread"][1][2]
    rows, same = [], []
    base_ms = 1000 * results["plain, 1 thread"][1][1] / len(paths)
    for name, (cores, (wall, cpu_s, found)) in results.items():
        cpu_ms = 1000 * cpu_s / len(paths)
        same.append(f"{name}: {sum(found[p] == reference[p] for p in paths)}/{len(paths)}")
        rows.append(
            [
                name,
                cores,
                f"{wall:.1f}",
                f"{len(paths) / wall:.0f}",
                f"{cpu_s:.1f}",
                f"{len(paths) / cpu_s:.0f}",
                f"{cpu_ms:.3f}",
                f"{cpu_ms - base_ms:+.3f}",
            ]
        )
    big_wall, big_cpu = results[f"ray, {args.cpus} CPUs"][1][:2]
    extra = len(paths) - len(small)
    per_image_ms = 1000 * (big_cpu - small_cpu) / extra
    fixed_cpu = small_cpu - per_image_ms * len(small) / 1000
    fixed_wall = small_wall - (big_wall - small_wall) * len(small) / extra
    split = (
        f"Ray's cost split with a second job of {len(small)} images: about {fixed_wall:.1f} s "
        f"wall and {fixed_cpu:.1f} CPU s per job (actors start, import, load the model), then "
        f"{per_image_ms:.3f} CPU ms per image ({1000 / per_image_ms:.0f} img/s per core), "
        f"{per_image_ms - base_ms:+.3f} ms over plain on 1 thread."
    )
    errors = sum(1 for text, _ in reference.values() if text is None)
    note = (
        f"{Path(model).name}: {spec.preset} preset, {spec.width}x{spec.height}x{spec.channels}"
        + (
            " (untrained weights: the same speed as trained ones)"
            if args.fresh
            else " (tests/tiny_reader.onnx, a toy that reads grey levels: nearly all the time "
            "is decoding and Ray; give --model runs/latest or --fresh default for a real model)"
            if model == TINY_READER
            else ""
        )
    )
    text = (
        "### Bulk reading: plain `predict` and `--engine ray`\n\n"
        f"{len(paths):,} images ({args.count:,} synthesized captchas, {spec.width}x{spec.height} "
        f"input, and {len(BAD_FILES)} unreadable files), batches of {args.batch_size}; model "
        f"{note}. Wall: start to last row (ray: the actors' start and model load, reading, "
        "and the Parquet shards; not `ray.init`, "
        f"{ray_start:.1f} s). CPU s: the reading process, and for ray every process under it. "
        "Per core = images / CPU s; overhead = CPU ms per image over plain on 1 thread (for "
        "ray, with its fixed cost per job spread over the images). Cores: ONNX Runtime "
        "threads (plain `predict` decodes images in threads beside them) or Ray CPUs.\n\n"
        + table(
            [
                "engine",
                "cores",
                "wall s",
                "img/s",
                "CPU s",
                "img/s per core",
                "CPU ms/img",
                "overhead ms/img",
            ],
            rows,
        )
        + f"\n\n{split}\n\nSame (text, error) as plain on 1 thread, every row once: {'; '.join(same)} "
        f"({errors} error rows each).\n\n"
        f"Command: `{command_line()}` at {git_revision()}  \n"
        f"Machine: {machine()}, ray {ray.__version__}; load average {load:.1f} at the start "
        "(other jobs on the machine stretch the wall clock, not CPU time)\n"
    )
    print(text)
    if args.results:
        update_section("bulk-ray", text, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
