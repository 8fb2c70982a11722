"""The base model shipped in the package: ``train --init base`` and ``predict base``.

A default-network reader trained on synthetic captchas of many styles only (see
``scripts/make_base_model.py``, which anyone can rerun). Its folder is laid out like a run
folder (``configs.yaml``, ``model.keras``, ``model.onnx``), so everything that takes a run
folder takes it.
"""

from __future__ import annotations

import os
from pathlib import Path

from captcha_ocr.errors import CaptchaOCRError

BASE_NAME = "base"  # what users type in place of a run folder
BASE_DIR = Path(__file__).resolve().parent / "base_model"


def resolve_base(model: str | os.PathLike) -> Path:
    """``"base"`` -> the base model's folder (a clear error when this install has none);
    anything else as it is. A folder or file named ``base`` in the working folder wins."""
    if str(model) != BASE_NAME or Path(model).exists():
        return Path(model)
    if not (BASE_DIR / "model.onnx").is_file():
        raise CaptchaOCRError(
            "this installation has no base model (src/captcha_ocr/base_model/ is empty); "
            "make one with: python scripts/make_base_model.py"
        )
    return BASE_DIR
