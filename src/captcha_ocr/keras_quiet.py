"""Keras, imported once for the whole package without TensorFlow's start-up lines.

Importing TensorFlow prints, from C++ and once per native library it loads (so twice), an
absl notice and a oneDNN note that ``TF_CPP_MIN_LOG_LEVEL`` does not reach. Every module that
uses Keras (``model``, ``fit``, ``devices``, ...) imports it from here::

    from captcha_ocr.keras_quiet import keras

so those lines are dropped in this one place; anything else TensorFlow writes while it loads
(an error, a warning) still reaches stderr.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's own C++ info and warnings

# The lines dropped: absl's notice, info lines in absl's format ("I0000 00:00:17... port.cc:153]
# oneDNN custom operations are on ..."), and the CPU-instructions note's second line.
STARTUP_LINE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\)"
    r"|I\d{4} \d\d:\d\d:[\d.]+ +\d+ [\w.]+:\d+\]"
    r"|To enable the following instructions: "
)


@contextlib.contextmanager
def startup_lines_dropped() -> Iterator[None]:
    """Capture what is written to file descriptor 2 inside the block, then pass on all but
    TensorFlow's start-up lines (:data:`STARTUP_LINE`)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no file descriptor 2 to capture: nothing to drop
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines(True) if not STARTUP_LINE.match(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


with startup_lines_dropped():
    import keras

__all__ = ["keras"]
