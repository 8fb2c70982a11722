"""The HTTP service under load: reads per second, latency, errors and memory, batching off and on.

Starts `python -m captcha_ocr serve MODEL` on a free loopback port once per batch wait (0 ms is
no micro-batching), warms it up, then runs `--concurrency` client threads (httpx, keep-alive)
until `--requests` requests are answered or `--time-limit` seconds pass. Reports requests/s,
p50/p99 latency of the reads, reads that failed (non-2xx or a wrong answer), 5xx answers, and
the server's resident memory (VmRSS, all its processes) after warm-up and at the end.
`--mixed 0.1` makes a tenth of the requests bad (bad base64, not an image, an image over the
byte limit, a bad parameter): each must get a 4xx, never a 5xx.

Without `--model`, a fresh untrained `default`-preset model is exported (weights do not change
the speed).

    python bench/serve_load.py --requests 20000 --results bench/RESULTS.md
    python bench/serve_load.py --model runs/latest --batch-wait-ms 0 1 4 --mixed 0.1
"""

from __future__ import annotations

import argparse
import base64
import io
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import command_line, machine, table, update_section

from captcha_ocr.charset import DEFAULT_CHARSET

SECTION = "serve-load"
BOUNDARY = "captcha-ocr-load-boundary"
# What each kind of bad request must get back.
BAD_KINDS = {"bad_base64": 400, "not_an_image": 415, "oversized": 413, "bad_parameter": 422}


@dataclass(frozen=True)
class Payload:
    body: bytes
    content_type: str
    expected: int  # the status it must get
    kind: str  # "read" or one of BAD_KINDS


@dataclass
class Tally:
    """What the clients saw; one lock guards it."""

    latencies: list[float] = field(default_factory=list)  # seconds, good reads only
    answered: int = 0
    failed_reads: int = 0  # good reads answered non-2xx or with the wrong number of results
    server_errors: int = 0  # 5xx of any request
    bad_sent: int = 0
    bad_wrong: int = 0  # bad requests not answered with their 4xx
    statuses: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def family(pid: int) -> set[int]:
    """``pid`` and its descendants (uvicorn's workers are child processes)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    family, added = {pid}, True
    while added:
        children = {p for p, parent in parents.items() if parent in family} - family
        family |= children
        added = bool(children)
    return family


def tree_rss_mb(pid: int) -> float:
    """Resident memory (VmRSS) of ``pid`` and its descendants."""
    total_kb = 0
    for member in family(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its live descendants."""
    total = 0
    for member in family(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


def captcha_pngs(count: int, width: int, height: int, channels: int, seed: int) -> list[bytes]:
    """Captcha-like PNGs at the model's input size: random characters on a noisy background."""
    rng = np.random.default_rng(seed)
    pngs = []
    for _ in range(count):
        background = rng.integers(200, 256, (height, width, 3), dtype=np.uint8)
        image = Image.fromarray(background)
        draw = ImageDraw.Draw(image)
        text = "".join(rng.choice(list(DEFAULT_CHARSET), 5))
        draw.text(
            (width // 8, height // 3), text, fill=tuple(int(c) for c in rng.integers(0, 90, 3))
        )
        if channels == 1:
            image = image.convert("L")
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        pngs.append(buffer.getvalue())
    return pngs


def multipart(files: list[bytes], fields: dict[str, str] | None = None) -> Payload:
    parts = []
    for name, value in (fields or {}).items():
        parts.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    for i, data in enumerate(files):
        head = (
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; "
            f'name="image"; filename="{i}.png"\r\nContent-Type: image/png\r\n\r\n'
        )
        parts.append(head.encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()
    return Payload(body, f"multipart/form-data; boundary={BOUNDARY}", 200, "read")


def json_payload(images: list[str]) -> Payload:
    return Payload(json.dumps({"images": images}).encode(), "application/json", 200, "read")


def good_payloads(pngs: list[bytes], per_request: int, body: str) -> list[Payload]:
    """Read requests of ``per_request`` images each, as multipart, JSON or both (alternating)."""
    payloads = []
    for i in range(len(pngs)):
        group = [pngs[(i + k) % len(pngs)] for k in range(per_request)]
        use_json = body == "json" or (body == "both" and i % 2)
        if use_json:
            payloads.append(json_payload([base64.b64encode(g).decode() for g in group]))
        else:
            payloads.append(multipart(group))
    return payloads


def bad_payloads(png: bytes, max_image_bytes: int) -> list[Payload]:
    def bad(payload: Payload, kind: str) -> Payload:
        return Payload(payload.body, payload.content_type, BAD_KINDS[kind], kind)

    return [
        bad(json_payload(["this is not base64!"]), "bad_base64"),
        bad(multipart([b"plain text, not an image"]), "not_an_image"),
        bad(multipart([png + b"\0" * max_image_bytes]), "oversized"),
        bad(multipart([png], {"beam_width": "0"}), "bad_parameter"),
    ]


def is_bad(index: int, share: float) -> bool:
    """Spreads the bad requests evenly through the run (a low-discrepancy sequence)."""
    return share > 0 and (index * 0.6180339887498949) % 1.0 < share


def run_clients(
    base_url: str,
    good: list[Payload],
    bad: list[Payload],
    requests: int,
    concurrency: int,
    mixed: float,
    per_request: int,
    time_limit: float,
) -> tuple[Tally, float]:
    """Fire ``requests`` requests from ``concurrency`` threads; returns the tally and seconds."""
    tally = Tally()
    counter = itertools.count()
    deadline = time.perf_counter() + time_limit

    def client() -> None:
        with httpx.Client(base_url=base_url, timeout=60) as http:
            while True:
                index = next(counter)
                if index >= requests or time.perf_counter() > deadline:
                    return
                sent_bad = is_bad(index, mixed)
                payload = bad[index % len(bad)] if sent_bad else good[index % len(good)]
                started = time.perf_counter()
                try:
                    response = http.post(
                        "/v1/read",
                        content=payload.body,
                        headers={"content-type": payload.content_type},
                    )
                    status = response.status_code
                    ok = status == 200 and len(response.json()["results"]) == per_request
                except (httpx.HTTPError, ValueError, KeyError):
                    status, ok = 0, False
                elapsed = time.perf_counter() - started
                with tally.lock:
                    tally.answered += 1
                    key = f"{payload.kind} {status}"
                    tally.statuses[key] = tally.statuses.get(key, 0) + 1
                    tally.server_errors += status >= 500
                    if sent_bad:
                        tally.bad_sent += 1
                        tally.bad_wrong += status != payload.expected
                    elif ok:
                        tally.latencies.append(elapsed)
                    else:
                        tally.failed_reads += 1

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tally, time.perf_counter() - started


class Server:
    """``python -m captcha_ocr serve`` as a subprocess, its output in a log file."""

    def __init__(self, model: Path, options: list[str], log_path: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "captcha_ocr",
                "serve",
                str(model),
                "--port",
                str(self.port),
                *options,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 120.0) -> dict:
        """Poll /healthz; returns /v1/model. Fails with the server's log if it never comes up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if httpx.get(self.base_url + "/healthz", timeout=2).status_code == 200:
                    return httpx.get(self.base_url + "/v1/model", timeout=10).json()
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        tail = self.log_path.read_text(errors="replace")[-3000:]
        raise SystemExit(f"the server did not come up on {self.base_url}:\n{tail}")

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


def measure(args: argparse.Namespace, model: Path, wait_ms: float, folder: Path) -> dict:
    options = ["--workers", str(args.workers), "--batch-wait-ms", f"{wait_ms:g}"]
    if args.threads:
        options += ["--threads", str(args.threads)]
    server = Server(model, options, folder / f"server-{wait_ms:g}ms.log")
    try:
        info = server.wait_ready()
        pngs = captcha_pngs(64, info["width"], info["height"], info["channels"], seed=0)
        good = good_payloads(pngs, args.images_per_request, args.body)
        bad = bad_payloads(pngs[0], info["limits"]["max_image_bytes"])
        warmup = max(args.concurrency * 4, min(500, args.requests // 10))
        run_clients(
            server.base_url, good, bad, warmup, args.concurrency, 0.0, args.images_per_request, 60
        )
        rss_start = tree_rss_mb(server.process.pid)
        cpu_start = tree_cpu_s(server.process.pid)
        tally, seconds = run_clients(
            server.base_url,
            good,
            bad,
            args.requests,
            args.concurrency,
            args.mixed,
            args.images_per_request,
            args.time_limit,
        )
        rss_end = tree_rss_mb(server.process.pid)
        cpu_seconds = tree_cpu_s(server.process.pid) - cpu_start
    finally:
        server.stop()
    latencies = sorted(tally.latencies) or [float("nan")]
    reads = len(tally.latencies) * args.images_per_request
    return {
        "wait_ms": wait_ms,
        "answered": tally.answered,
        "seconds": seconds,
        "requests_per_s": tally.answered / seconds,
        "reads_per_s": reads / seconds,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "server_cpu_ms": 1000 * cpu_seconds / max(1, tally.answered),
        "failed_reads": tally.failed_reads,
        "server_errors": tally.server_errors,
        "bad_sent": tally.bad_sent,
        "bad_wrong": tally.bad_wrong,
        "rss_start_mb": rss_start,
        "rss_end_mb": rss_end,
        "statuses": tally.statuses,
    }


def report(args: argparse.Namespace, results: list[dict], model_name: str) -> str:
    rows = []
    for r in results:
        growth = 100 * (r["rss_end_mb"] / r["rss_start_mb"] - 1) if r["rss_start_mb"] else 0.0
        rows.append(
            [
                f"{r['wait_ms']:g}" + (" (off)" if r["wait_ms"] == 0 else ""),
                f"{r['answered']:,}",
                f"{r['requests_per_s']:.0f}",
                f"{r['reads_per_s']:.0f}",
                f"{r['p50_ms']:.1f}",
                f"{r['p99_ms']:.1f}",
                f"{r['server_cpu_ms']:.2f}",
                r["failed_reads"],
                r["server_errors"],
                f"{r['bad_sent'] - r['bad_wrong']} / {r['bad_sent']}",
                f"{r['rss_start_mb']:.0f} -> {r['rss_end_mb']:.0f} ({growth:+.1f}%)",
            ]
        )
    return (
        "### HTTP service under load\n\n"
        f"`captcha-ocr serve` ({model_name}, {args.workers} worker(s)"
        + (f", {args.threads} ONNX Runtime thread(s)" if args.threads else "")
        + f"), {args.concurrency} concurrent keep-alive clients on the same machine, "
        f"{args.images_per_request} image(s) a request ({args.body} bodies), "
        f"{args.mixed:.0%} bad requests. Latency: reads only. Server CPU: user + system time "
        "of the server's processes per request (less noisy than requests/s on a shared "
        "machine). Memory: the server's VmRSS after warm-up and at the end.\n\n"
        + table(
            [
                "batch wait (ms)",
                "requests",
                "requests/s",
                "reads/s",
                "p50 (ms)",
                "p99 (ms)",
                "server CPU ms/request",
                "failed reads",
                "5xx",
                "bad -> 4xx",
                "RSS MB",
            ],
            rows,
        )
        + f"\n\nCommand: `{command_line()}`  \nMachine: {machine()}\n"
    )


def fresh_model(folder: Path) -> Path:
    """A fresh `default` model for 200x50 captchas, exported into ``folder`` as
    bench/read_speed.py exports it (its reads greedy, as a trained model's are)."""
    from read_speed import export_fresh

    from captcha_ocr.sizes import ImageSize

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    path, _ = export_fresh("default", folder, ImageSize(200, 50))["default"]
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, help="run folder or .onnx (default: fresh export)")
    parser.add_argument("--requests", type=int, default=20_000, help="per batch-wait setting")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads")
    parser.add_argument(
        "--batch-wait-ms",
        type=float,
        nargs="+",
        default=[0.0, 2.0],
        help="server batch waits to compare, one server each (default: 0 2)",
    )
    parser.add_argument("--workers", type=int, default=1, help="server worker processes")
    parser.add_argument("--threads", type=int, help="ONNX Runtime threads per worker")
    parser.add_argument("--images-per-request", type=int, default=1)
    parser.add_argument(
        "--body", choices=("multipart", "json", "both"), default="both", help="request bodies"
    )
    parser.add_argument("--mixed", type=float, default=0.0, help="share of bad requests (0-1)")
    parser.add_argument(
        "--time-limit", type=float, default=300.0, help="seconds per setting, at most"
    )
    parser.add_argument("--results", type=Path, help="replace the serve-load section of this file")
    args = parser.parse_args(argv)
    if not 0 <= args.mixed <= 1 or args.requests < 1 or args.concurrency < 1:
        parser.error("--mixed must be in [0, 1]; --requests and --concurrency must be >= 1")

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.model is None:
            model = fresh_model(folder)
            model_name = "fresh `default` preset model"
        else:
            model, model_name = args.model, f"`{args.model}`"
        for wait_ms in args.batch_wait_ms:
            result = measure(args, model, wait_ms, folder)
            results.append(result)
            print(
                f"batch wait {wait_ms:g} ms: {result['reads_per_s']:.0f} reads/s, "
                f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
                f"server CPU {result['server_cpu_ms']:.2f} ms/request, "
                f"failed {result['failed_reads']}, 5xx {result['server_errors']}, "
                f"statuses {result['statuses']}",
                flush=True,
            )
    text = report(args, results, model_name)
    print(text)
    if args.results:
        update_section(SECTION, text, args.results)
    clean = all(r["failed_reads"] == 0 and r["server_errors"] == 0 for r in results)
    return 0 if clean and all(r["bad_wrong"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
