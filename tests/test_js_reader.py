"""The JavaScript reader (js/): its golden set is what today's Python reader reads, and the JS
reader, run under Node, matches it (texts identical, probabilities within 1e-4)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import PIL
import pytest

JS = Path(__file__).resolve().parents[1] / "js"
# The golden pixels follow Pillow 13's resize, which runs the vertical pass first when the
# height shrinks much more than the width (older Pillows differ there by one grey level).
PILLOW_MAJOR = int(PIL.__version__.split(".")[0])


def load_make_golden():
    spec = importlib.util.spec_from_file_location("make_golden", JS / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(PILLOW_MAJOR < 13, reason="the golden set was made with Pillow >= 13")
def test_the_golden_set_is_what_the_python_reader_reads() -> None:
    make_golden = load_make_golden()
    committed = json.loads((make_golden.GOLDEN / make_golden.JSON_FILE).read_text("utf-8"))
    current = make_golden.expected(make_golden.GOLDEN)
    hint = "the Python reader changed: run js/make_golden.py, then make the JS reader match"
    assert [r["image"] for r in current["reads"]] == [r["image"] for r in committed["reads"]]
    for now, then in zip(current["reads"], committed["reads"]):
        where = f"{then['model']} on {then['image']}: {hint}"
        assert now["pixels_sha256"] == then["pixels_sha256"], where
        assert (now["text"], now["allowed_text"]) == (then["text"], then["allowed_text"]), where
        for key in ("confidence", "allowed_confidence"):
            assert now[key] == pytest.approx(then[key], rel=1e-5, abs=1e-12), where
        np.testing.assert_allclose(now["probs"], then["probs"], atol=1e-5, err_msg=where)
    assert current["resizes"] == committed["resizes"], hint
    assert current["alpha_table"] == committed["alpha_table"], hint
    assert current["all_colours_to_grey"] == committed["all_colours_to_grey"], hint


def node_skip_reason() -> str | None:
    """Why the Node test cannot run here, or None."""
    node = shutil.which("node")
    if node is None:
        return "node not found: install Node.js 20.9+ and npm, then run: npm ci --prefix js"
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout
    major = re.match(r"v(\d+)", version)
    if major is None or int(major.group(1)) < 20:
        return f"node {version.strip()} is too old for the JS reader's packages (needs 20.9+)"
    for package in ("onnxruntime-node", "sharp"):
        if not (JS / "node_modules" / package).is_dir():
            return f"js/node_modules/{package} missing: run npm ci --prefix js (make test does)"
    return None


TESTS = [str(p.relative_to(JS)) for p in (JS / "test").glob("*.test.mjs")]


def test_the_js_reader_matches_the_golden_set_under_node() -> None:
    reason = node_skip_reason()
    if reason:
        pytest.skip(reason)
    result = subprocess.run(
        [shutil.which("node"), "--test", "--test-reporter=dot", *sorted(TESTS)],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"node --test js/test/ failed:\n{result.stdout}\n{result.stderr}"
