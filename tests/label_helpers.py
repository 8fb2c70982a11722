"""Helpers of the label tests: captchas the tiny reader reads exactly, image checksums, and
``captcha-ocr label`` in its own process."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from PIL import Image

from tests import tiny_reader

TEXTS = ["ab1", "c2d", "1234", "dcba", "a1b2", "bb", "4c", "d3a", "2a2", "cab"]


def draw_images(folder: Path, texts: list[str] = TEXTS) -> dict[str, str]:
    """Captchas the tiny reader reads exactly, under neutral names; {file name: text}."""
    folder.mkdir(parents=True)
    truth = {}
    for i, text in enumerate(texts):
        name = f"cap{i:03d}.png"
        Image.fromarray(tiny_reader.draw(text)[..., 0]).save(folder / name)
        truth[name] = text
    return truth


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every image file under ``folder``."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.png"))
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(images: Path, work: Path, log: Path, *flags: str) -> tuple[subprocess.Popen, str]:
    """``captcha-ocr label`` in its own process, once it answers; (process, base URL)."""
    port = free_port()
    command = [sys.executable, "-m", "captcha_ocr", "label", str(images), "--out", str(work)]
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*command, "--port", str(port), *flags],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "no answer after 60 s:\n" + log.read_text()
        try:
            if httpx.get(url + "/v1/status", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
