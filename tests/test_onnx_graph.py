"""The export tidies tf2onnx's graph (constant Tensordot shapes, no zero LSTM states) and still
computes what Keras computes, for every network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from captcha_ocr.config import ModelSpec
from captcha_ocr.export import export_model
from captcha_ocr.model import build_model, time_steps
from captcha_ocr.onnx_graph import tidy


def _export(preset: str, folder: Path) -> tuple[Path, np.ndarray]:
    """A fresh ``preset`` network exported with Keras' parity checked on a few images."""
    channels = 3 if preset == "reference" else 1
    spec = ModelSpec(preset, "abc", 50, 200, channels, 4)
    model = build_model(spec)
    spec = ModelSpec(preset, "abc", 50, 200, channels, time_steps(model))
    images = np.random.default_rng(0).uniform(0, 255, (5, 50, 200, channels)).astype(np.float32)
    return export_model(model, spec, folder / f"{preset}.onnx", check_images=images), images


# default: two Dense layers over the sequence and an LSTM; reference: a residual CNN; tiny: a
# GRU, which tf2onnx writes as a Loop whose body reads tensors of the outer graph.
@pytest.mark.parametrize("preset", ["default", "reference", "tiny"])
def test_the_tidied_export_computes_what_keras_computes(preset: str, tmp_path: Path) -> None:
    path, _ = _export(preset, tmp_path)  # export_model raises ParityError if it does not
    onnx.checker.check_model(onnx.load(str(path)))


def test_the_default_export_works_out_no_shape_at_read_time(tmp_path: Path) -> None:
    path, _ = _export("default", tmp_path)
    graph = onnx.load(str(path)).graph
    ops = [node.op_type for node in graph.node]
    assert "Shape" not in ops and "Expand" not in ops, ops
    (lstm,) = [node for node in graph.node if node.op_type == "LSTM"]
    assert list(lstm.input[5:7]) in ([], ["", ""]), "the zero initial state is left to ONNX"
    names = {t.name for t in graph.initializer}
    read = {name for node in graph.node for name in node.input}
    assert names <= read, f"unread weights kept: {sorted(names - read)}"


def test_tidy_keeps_a_node_read_only_inside_a_loop_body() -> None:
    from onnx import TensorProto, helper

    outer = helper.make_node("Identity", ["x"], ["outer"])  # only the body reads it
    body = helper.make_graph(
        [helper.make_node("Identity", ["outer"], ["y_out"])],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("y_out", TensorProto.FLOAT, [1]),
        ],
    )
    body.node.insert(0, helper.make_node("Identity", ["cond"], ["cond_out"]))
    loop = helper.make_node("Loop", ["trips", ""], ["y"], body=body)
    unread = helper.make_node("Identity", ["x"], ["nobody_reads_this"])
    graph = helper.make_graph(
        [outer, unread, loop],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor("trips", TensorProto.INT64, [], [2])],
    )
    tidied = tidy(helper.make_model(graph))
    assert [node.output[0] for node in tidied.graph.node] == ["outer", "y"]
