"""Atomic writes: the whole new file or the whole old one, never half, never a stray temp."""

from __future__ import annotations

import os
import stat

import pytest

from captcha_ocr.files import atomic_path, write_bytes_atomic, write_text_atomic


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_write_text_and_bytes(tmp_path):
    text_path = tmp_path / "a" / "b" / "notes.txt"  # parent folders are made
    write_text_atomic(text_path, "héllo\nwörld\n")
    assert text_path.read_bytes() == "héllo\nwörld\n".encode()
    bytes_path = tmp_path / "blob.bin"
    write_bytes_atomic(bytes_path, bytes(range(256)))
    assert bytes_path.read_bytes() == bytes(range(256))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "blob.bin"]


def test_overwrites_existing_file(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old")
    write_bytes_atomic(path, b"new contents")
    assert path.read_bytes() == b"new contents"
    assert os.listdir(tmp_path) == ["model.onnx"]


def test_temp_path_is_beside_target_with_its_suffix(tmp_path):
    target = tmp_path / "best.keras"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.endswith(".keras")
        assert tmp != target
        assert not target.exists()  # invisible until the block succeeds
        tmp.write_bytes(b"weights")
    assert target.read_bytes() == b"weights"
    assert not tmp.exists()
    with atomic_path(tmp_path / "x.bin", suffix=".zip") as tmp:
        assert tmp.name.endswith(".zip")


def test_exception_keeps_old_file_and_removes_temp(tmp_path):
    path = tmp_path / "configs.yaml"
    path.write_text("old: true\n")
    with pytest.raises(RuntimeError, match="crash"), atomic_path(path) as tmp:
        tmp.write_text("new: half-written")
        raise RuntimeError("crash mid-write")
    assert path.read_text() == "old: true\n"
    assert os.listdir(tmp_path) == ["configs.yaml"]


def test_exception_without_old_file_leaves_nothing(tmp_path):
    path = tmp_path / "fresh.txt"
    with pytest.raises(KeyboardInterrupt), atomic_path(path) as tmp:
        tmp.write_text("partial")
        raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_temp_removed_even_if_block_deletes_or_moves_it(tmp_path):
    path = tmp_path / "out.txt"
    with pytest.raises(ValueError), atomic_path(path) as tmp:
        tmp.unlink()
        raise ValueError("after removing it")
    assert os.listdir(tmp_path) == []


def test_file_mode_follows_umask_not_0600(tmp_path, umask_022):
    path = tmp_path / "model.onnx"
    write_bytes_atomic(path, b"x")
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode != 0o600
    assert mode == 0o644
    with atomic_path(tmp_path / "other.txt") as tmp:
        tmp.write_text("y")
    assert stat.S_IMODE((tmp_path / "other.txt").stat().st_mode) == 0o644
