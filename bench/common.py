"""Helpers shared by the benchmarks: the machine, result tables, RESULTS.md sections."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "RESULTS.md"


def measure_this_checkout() -> None:
    """Make ``captcha_ocr`` (here and in the trainings a bench starts as subprocesses) the package
    beside this bench, not whichever checkout the environment installed: with an editable install
    of another worktree, a bench run from a second worktree measured the first one's code and
    recorded the second one's commit (two "side by side" pairs of runs in session 14 measured
    one code twice, and read the same to the image)."""
    source = BENCH_DIR.parent / "src"
    if not (source / "captcha_ocr").is_dir():
        return
    sys.path.insert(0, str(source))
    others = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(source), *([others] if others else [])])


measure_this_checkout()  # before any bench imports captcha_ocr (each imports this module first)


@contextlib.contextmanager
def plot_to(path: Path, figsize: tuple[float, float]):
    """One-axis matplotlib figure (no display needed), saved to ``path`` when the block ends."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=figsize)
    try:
        yield axis
        fig.tight_layout()
        fig.savefig(path, dpi=90)
    finally:
        plt.close(fig)


REFERENCE_SET = BENCH_DIR.parents[1] / "shared" / "datasets" / "captcha_images_v2"


def machine() -> str:
    """One line naming the machine: CPU model, cores, Python, and the key packages."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    versions = []
    for label, names in (
        ("tensorflow", ("tensorflow-cpu", "tensorflow")),
        ("keras", ("keras",)),
        ("onnxruntime", ("onnxruntime",)),
    ):
        for name in names:
            try:
                versions.append(f"{label} {version(name)}")
                break
            except PackageNotFoundError:
                continue
    return (
        f"{cpu}, {os.cpu_count()} cores, no GPU, Python {platform.python_version()}, "
        + ", ".join(versions)
    )


def command_line() -> str:
    """This bench's command, quoted so that it can be pasted into a shell again."""
    return "python " + shlex.join([os.path.relpath(sys.argv[0]), *sys.argv[1:]])


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def kept_runs_parser(description: str, section: str) -> argparse.ArgumentParser:
    """The arguments of a script that re-reads folders ``bench/real_sites.py --keep DIR``
    leaves: the folders, the RESULTS.md section, ``--no-record``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("folders", nargs="+", type=Path, help="real_sites.py --keep run folders")
    parser.add_argument("--section", default=section, help="RESULTS.md section name")
    parser.add_argument("--no-record", action="store_true", help="do not write RESULTS.md")
    return parser


def kept_run(folder: Path) -> tuple[Path, Path]:
    """A kept folder's run (``runs/latest``) and its held-out part (``test.csv``)."""
    return folder / "runs" / "latest", folder / "test.csv"


def record(section: str | None, title: str, text: str) -> None:
    """Print the table ``text`` and, unless ``section`` is None (``--no-record``), put it in
    RESULTS.md under ``title`` with the command, the commit and the machine that made it."""
    print(text)
    if section is not None:
        update_section(
            section,
            f"## {title}\n\n{text}\n\nCommand: `{command_line()}` at {git_revision()}  \n"
            f"Machine: {machine()}\n",
        )


def update_section(name: str, markdown: str, results: Path = RESULTS) -> None:
    """Replace the ``<!-- name -->`` ... ``<!-- /name -->`` section of RESULTS.md (or append)."""
    block = f"<!-- {name} -->\n{markdown.strip()}\n<!-- /{name} -->"
    text = results.read_text() if results.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"<!-- {re.escape(name)} -->.*?<!-- /{re.escape(name)} -->", re.S)
    text = (
        pattern.sub(lambda _: block, text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + block + "\n"
    )
    tmp = results.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(results)


def git_revision() -> str:
    """The commit the benchmark ran at, with ``+changes`` when the package's or the bench's
    tracked files differ from it (the figures are then not that commit's)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=BENCH_DIR, check=True
        ).stdout.strip()

    try:
        changed = git("status", "--porcelain", "--untracked-files=no", "--", "../src", ".")
        return git("rev-parse", "--short", "HEAD") + ("+changes" if changed else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def require_reference_set(path: Path = REFERENCE_SET) -> Path:
    if not path.is_dir():
        sys.exit(
            f"the reference set is missing: expected {path} (see ../shared/datasets/README.md)"
        )
    return path
