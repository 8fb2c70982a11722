"""The serve tests' model: a tiny hand-built ONNX reader, made without TensorFlow.

It reads grey levels, not shapes. Each 4-pixel column strip of a ``(32, 100, 1)`` image is one
CTC time step (T = 25); the strip's mean brightness picks the class whose level is nearest:
white is the blank, and each character of :data:`CHARSET` has its own grey (:data:`LEVELS`).
So :func:`draw` can write any short text that the model then reads back exactly, and noise
images read differently from each other. Input and output are those of a real export: raw
0-255 pixels ``(B, 32, 100, 1)`` float32 in, log-probabilities ``(B, 25, 9)`` out, and the
metadata is what ``captcha-ocr export`` writes (:func:`captcha_ocr.metadata.metadata_from_spec`).

Why a committed file (``tiny_reader.onnx``, about 1 KB) rather than one built at test time:
building needs the ``onnx`` package, which the ``[serve]`` extra does not install, and one file
read by every environment means the serve tests read the same model wherever they run.
``test_tiny_reader.py`` checks that the file still matches this script (the graph, when
``onnx`` is installed) and today's metadata contract (always). To regenerate it (needs onnx):

    python tests/tiny_reader.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from captcha_ocr.config import ModelSpec

PATH = Path(__file__).with_name("tiny_reader.onnx")
CHARSET = "abcd1234"
SPEC = ModelSpec("tiny", CHARSET, 32, 100, 1, 8)  # the longest text test_tiny_reader draws
STRIP = 4  # columns per time step
STEPS = SPEC.width // STRIP
# Grey level of each class: the blank is white paper, character i is 28 levels darker per i.
LEVELS = np.array([255.0 - 28.0 * k for k in range(SPEC.num_classes)], np.float32)
# How sharply a strip's class follows its level: two levels apart (28) differ by 7.8 in
# log-probability, so a strip drawn exactly at a level reads with probability > 0.999.
SHARPNESS = 0.01


def draw(text: str) -> np.ndarray:
    """A ``(32, 100, 1)`` uint8 image that the tiny reader reads as ``text`` (up to 8 characters):
    two strips of each character's grey, then a white strip (so repeats stay apart)."""
    if len(text) * 3 > STEPS:
        raise ValueError(f"{text!r}: at most {STEPS // 3} characters fit")
    strips = np.full(STEPS, LEVELS[0], np.float32)
    for i, char in enumerate(text):
        strips[3 * i : 3 * i + 2] = LEVELS[CHARSET.index(char) + 1]
    columns = np.repeat(strips, STRIP)  # (W,)
    return np.broadcast_to(columns[None, :, None], (SPEC.height, SPEC.width, 1)).astype(np.uint8)


def build():
    """The tiny reader as an ONNX ``ModelProto`` (needs the ``onnx`` package)."""
    from onnx import TensorProto, helper, numpy_helper

    from captcha_ocr.metadata import metadata_from_spec, write_metadata

    h, w, c, classes = SPEC.height, SPEC.width, SPEC.channels, SPEC.num_classes
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["columns"], axes=[1, 3], keepdims=0),  # (B, W)
        helper.make_node("Reshape", ["columns", "strip_shape"], ["strips"]),  # (B, T, STRIP)
        helper.make_node("ReduceMean", ["strips"], ["level"], axes=[2], keepdims=1),  # (B, T, 1)
        helper.make_node("Sub", ["level", "levels"], ["distance"]),  # (B, T, classes)
        helper.make_node("Mul", ["distance", "distance"], ["squared"]),
        helper.make_node("Mul", ["squared", "sharpness"], ["logits"]),
        helper.make_node("LogSoftmax", ["logits"], ["log_probs"], axis=-1),
    ]
    initializers = [
        numpy_helper.from_array(np.array([-1, STEPS, STRIP], np.int64), "strip_shape"),
        numpy_helper.from_array(LEVELS, "levels"),
        numpy_helper.from_array(np.array(-SHARPNESS, np.float32), "sharpness"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_reader",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", h, w, c])],
        [helper.make_tensor_value_info("log_probs", TensorProto.FLOAT, ["batch", STEPS, classes])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by ONNX Runtime 1.17, the oldest we support
    write_metadata(model, metadata_from_spec(SPEC))
    return model


if __name__ == "__main__":
    PATH.write_bytes(build().SerializeToString())
    print(f"wrote {PATH} ({PATH.stat().st_size} bytes)")
