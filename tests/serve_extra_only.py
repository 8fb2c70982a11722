"""A pytest plugin that makes this interpreter look like an install with only the ``[serve]``
extra: TensorFlow, Keras, tf2onnx and onnx cannot be imported, and at the end none of them is
in ``sys.modules``. Used by ``test_serve.py``; by hand:

    python -m pytest -p tests.serve_extra_only tests/test_serve.py tests/test_api_fuzz.py
"""

from __future__ import annotations

import importlib.abc
import sys

import pytest

TRAIN_ONLY = ("tensorflow", "keras", "tf2onnx", "onnx")


class _Refuse(importlib.abc.MetaPathFinder):
    """Refuses the ``[train]`` extra's packages, as if they were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in TRAIN_ONLY:
            raise ModuleNotFoundError(f"No module named {name!r} (serve extra only)", name=name)
        return None


def _loaded() -> list[str]:
    return sorted(name for name in sys.modules if name.partition(".")[0] in TRAIN_ONLY)


def pytest_configure(config: pytest.Config) -> None:
    if _loaded():
        raise pytest.UsageError(f"already imported before the plugin: {', '.join(_loaded())}")
    sys.meta_path.insert(0, _Refuse())


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _loaded():
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print(f"\nimported although only the serve extra is installed: {', '.join(_loaded())}")
