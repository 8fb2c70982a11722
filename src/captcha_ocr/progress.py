"""Progress output for every long loop of the package: training, loading images, drawing
captchas, reading, downloading.

On a terminal it is a live ``tqdm`` bar. Anywhere else (CI, ``nohup``, a log file) a bar's
carriage-return redraws would fill the log with thousands of updates, so it writes a plain
line now and then instead.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

# A log file gets at most one progress line this often (plus one at the end of a long job).
PLAIN_INTERVAL_S = 30.0
# Reading more images than this shows progress (predict, pseudo-label, train --unlabeled);
# fewer are read in seconds.
READ_PROGRESS_FROM = 200


def progress_bar(
    iterable: Iterable | None = None,
    *,
    total: float | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
    initial: int = 0,
    **tqdm_options: Any,
):
    """A progress bar over ``iterable`` (or updated by hand with ``update(n)``): ``tqdm`` when
    stderr is a terminal, :class:`PlainProgress` when it is not, silent when not ``enabled``.

    >>> for _ in progress_bar(range(3), desc="work", enabled=False):
    ...     pass
    """
    if enabled and not _is_terminal(sys.stderr):
        return PlainProgress(iterable, total=total, desc=desc, unit=unit, initial=initial)
    from tqdm import tqdm

    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        initial=initial,
        disable=not enabled,
        **tqdm_options,
    )


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a stream without a file behind it, or closed
        return False


class PlainProgress:
    """The part of ``tqdm``'s interface the package uses, written as whole lines:
    ``desc: n/total unit (p %), s s`` at most every ``interval`` seconds, and a last line at
    ``close()`` when the job took longer than that (a short job writes nothing)."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        total: float | None = None,
        desc: str = "",
        unit: str = "it",
        initial: int = 0,
        interval: float = PLAIN_INTERVAL_S,
        file: TextIO | None = None,
    ) -> None:
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n, self.interval, self.file = initial, interval, file
        self.postfix = ""
        self.started = self.last_line = time.monotonic()
        self.lines = 0
        self.closed = False

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable or ():
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last_line >= self.interval:
            self.last_line = now
            self._write()

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self.postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if time.monotonic() - self.started >= self.interval:
                self._write()

    def _write(self) -> None:
        count = f"{self.n:g}" + (f"/{self.total:g}" if self.total else "")
        share = f" ({self.n / self.total:.0%})" if self.total else ""
        line = f"{self.desc}: {count} {self.unit}{share}, {time.monotonic() - self.started:.0f} s"
        print(line + (f", {self.postfix}" if self.postfix else ""), file=self.file or sys.stderr)
        self.lines += 1
