"""Robustness of ``captcha-ocr download``: a bad archive is one clear error that leaves no
half file and no done marker; unicode archive and member names unpack.

The bad inputs are made on the fly in ``tmp_path`` by the factories of tests/bad_inputs.py,
whose docstring says what a right answer is and what "the 8 unreadable kinds" and "the 5 odd
kinds" are.

Covered here ("elsewhere": in another test module, not repeated here):

============ ===== ==========================================================================
entry point  count bad inputs
============ ===== ==========================================================================
``download`` 9     a zero-byte archive, a truncated zip, a truncated tar.gz, a zip with a
                   corrupt member, an HTML page saved as .zip, a member escaping the target,
                   --to that is a file, too little free disk space; unicode archive and member
                   names (unpacked). Elsewhere: absolute and ``..`` members, tar links
============ ===== ==========================================================================
"""

from __future__ import annotations

import collections
import io
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import fails, succeeds, write


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def tar_gz_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _noise(n: int) -> bytes:
    return np.random.default_rng(0).integers(0, 256, n, np.uint8).tobytes()


def _corrupt_member(data: bytes) -> bytes:
    damaged = bytearray(data)
    damaged[len(damaged) // 6] ^= 0xFF  # inside the first member's compressed bytes
    return bytes(damaged)


MEMBERS = {f"captchas/ab{i}.png": _noise(50_000) for i in range(3)}

# name of the archive file -> (its bytes, words the error must hold)
BAD_ARCHIVES: dict[str, tuple[Callable[[], bytes], tuple[str, ...]]] = {
    "empty.zip": (lambda: b"", ("is empty", "check the URL")),
    "cut.zip": (lambda: zip_bytes(MEMBERS)[:60_000], ("not a zip or tar", "check the URL")),
    "cut.tar.gz": (lambda: tar_gz_bytes(MEMBERS)[:60_000], ("download it again",)),
    "crc.zip": (lambda: _corrupt_member(zip_bytes(MEMBERS)), ("damaged", "download it again")),
    "page.zip": (lambda: b"<!DOCTYPE html><h1>Not Found</h1>", ("not a zip or tar",)),
    "escape.zip": (
        lambda: zip_bytes({"captchas/ab1.png": b"ok", "../../evil.png": b"evil"}),
        ("outside", "refusing"),
    ),
}


@pytest.mark.parametrize("name", BAD_ARCHIVES)
def test_download_refuses_a_bad_archive(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    make, words = BAD_ARCHIVES[name]
    source = write(tmp_path / "served" / name, make())
    out = tmp_path / "deep" / "Datasets"
    fails(["download", source.as_uri(), "--to", out], capsys, *words)
    assert not (tmp_path / "evil.png").exists() and not (tmp_path / "deep" / "evil.png").exists()
    # Never half a file: whatever was unpacked is whole.
    for path in out.rglob("*.png"):
        assert path.read_bytes() == MEMBERS[path.relative_to(out).as_posix()]
    # Nothing marks it done, so the next try fetches or extracts again.
    assert not list(out.glob(".captcha-ocr-extracted*"))


def test_download_to_a_file_or_a_full_disk(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from captcha_ocr import download as download_module

    source = write(tmp_path / "captchas.zip", zip_bytes(MEMBERS))
    blocker = write(tmp_path / "file", b"not a folder")
    fails(["download", source.as_uri(), "--to", blocker], capsys, "is a file", "choose a folder")
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(download_module.shutil, "disk_usage", lambda _: usage(10**9, 0, 1000))
    out = tmp_path / "Datasets"
    fails(["download", source.as_uri(), "--to", out], capsys, "only 0.0 MB", "free some space")
    assert not [p for p in out.rglob("*.png")]


def test_download_unicode_archive_and_member_names(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    members = {"données/äb字.png": b"one", "données/sub/ü.png": b"two"}
    source = write(tmp_path / "captchas é.zip", zip_bytes(members))
    out = tmp_path / "Datasets"
    succeeds(["download", source.as_uri(), "--to", out], capsys)
    assert (out / "données" / "äb字.png").read_bytes() == b"one"
    assert (out / "données" / "sub" / "ü.png").read_bytes() == b"two"
