"""'base' names the base model shipped in the package, wherever a model or --init is given."""

from __future__ import annotations

from pathlib import Path

import pytest

from captcha_ocr import basemodel
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.infer import resolve_model_path


def test_other_names_pass_through(tmp_path: Path):
    assert basemodel.resolve_base(tmp_path / "run") == tmp_path / "run"


def test_a_missing_base_model_says_how_to_make_one(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(basemodel, "BASE_DIR", tmp_path / "nothing")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CaptchaOCRError, match=r"make_base_model\.py"):
        resolve_model_path("base")


def test_a_folder_named_base_in_the_working_folder_wins(tmp_path: Path, monkeypatch):
    (tmp_path / "base").mkdir()
    monkeypatch.chdir(tmp_path)
    assert basemodel.resolve_base("base") == Path("base")


def test_base_resolves_to_the_package_folder(tmp_path: Path, monkeypatch):
    folder = tmp_path / "base_model"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"x")
    monkeypatch.setattr(basemodel, "BASE_DIR", folder)
    monkeypatch.chdir(tmp_path / "base_model")
    assert resolve_model_path("base") == folder / "model.onnx"


@pytest.mark.skipif(
    not (basemodel.BASE_DIR / "model.onnx").is_file(), reason="this checkout ships no base model"
)
def test_the_shipped_base_model_reads_and_is_small():
    from captcha_ocr.infer import Reader

    reader = Reader.load("base")
    assert set("0123456789abcXYZ") <= set(reader.spec.charset)
    assert sum(p.stat().st_size for p in basemodel.BASE_DIR.iterdir()) < 2_500_000
    assert (basemodel.BASE_DIR / "model.keras").is_file()
    assert (basemodel.BASE_DIR / "configs.yaml").is_file()
