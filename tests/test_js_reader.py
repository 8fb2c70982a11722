"""The JavaScript reader (js/): its golden set is what today's Python reader reads, and the JS
reader matches it (same model input, texts identical, probabilities within 1e-4) under Node
(onnxruntime-node, sharp) and in headless Chromium (onnxruntime-web, the browser's decoder)."""

from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

JS = Path(__file__).resolve().parents[1] / "js"
# The golden pixels follow Pillow 13's resize (pyproject requires it), which runs the vertical
# pass first when the height shrinks much more than the width (older Pillows differ there by
# one grey level).


def load_make_golden():
    spec = importlib.util.spec_from_file_location("make_golden", JS / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


# What the browser's own image decoder does differently from Pillow (the reader cannot fix it).
BROWSER_DECODER_DIFFERENCES = {
    "images/i16_101x33.png": "Chromium keeps a 16-bit grey PNG's high byte; Pillow rounds",
}


class _JsFiles(http.server.SimpleHTTPRequestHandler):
    extensions_map: ClassVar[dict[str, str]] = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",
        ".wasm": "application/wasm",
    }

    def log_message(self, *args) -> None:  # keep the test output quiet
        pass


@pytest.fixture(scope="module")
def js_server() -> Iterator[str]:
    """js/ served over HTTP on localhost (module scripts and WebAssembly need it)."""
    if not (JS / "node_modules" / "onnxruntime-web").is_dir():
        pytest.skip("js/node_modules/onnxruntime-web missing: run npm ci --prefix js")
    handler = functools.partial(_JsFiles, directory=str(JS))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_js_reader_matches_the_golden_set_in_a_browser(browser, js_server: str) -> None:
    browser.get(f"{js_server}/golden/")
    browser.set_script_timeout(120)
    results = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "import('/test/browser-check.mjs').then((m) => m.run())"
        ".then(done, (e) => done(`error: ${e}\\n${e.stack}`));"
    )
    assert isinstance(results, list), results
    golden = json.loads((JS / "golden" / "golden.json").read_text("utf-8"))["reads"]
    assert len(results) == len(golden)
    for got, want in zip(results, golden):
        if want["image"] in BROWSER_DECODER_DIFFERENCES:
            continue
        where = f"{want['model']} on {want['image']} in Chromium"
        assert got["pixels_sha256"] == want["pixels_sha256"], where
        assert got["worst_prob_difference"] <= 1e-4, where
        assert (got["text"], got["allowed_text"]) == (want["text"], want["allowed_text"]), where
        assert got["confidence"] == pytest.approx(want["confidence"], rel=1e-4, abs=1e-12), where
