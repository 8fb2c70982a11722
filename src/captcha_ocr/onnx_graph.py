"""Tidy an exported ONNX graph so that ONNX Runtime runs fewer small nodes; same function.

tf2onnx writes what Keras leaves to run time as nodes that work it out on every read:

* a Dense layer over a sequence ``(B, T, F)`` becomes a Tensordot: the input's shape read,
  gathered, multiplied and concatenated into the two Reshapes around a 2-D MatMul. Only the
  batch is unknown at export, so both shapes can be constants (``[-1, F]`` and ``[-1, T, N]``);
* an LSTM's zero initial state is built from the batch size (Shape, Slice, Concat, Expand,
  Unsqueeze, Concat); ONNX's LSTM starts from zeros when the state is left out.

On a 200x50 read of the default network that was 26 of 56 nodes and 5-7 % of a one-thread
read (``bench/read_speed.py``, RESULTS.md "onnx-tidy"). onnxslim, the library for the job,
kept the zero-state chain and saved 3-4 % in the same runs, and would bring sympy and its own
onnx into the training install. Nothing here changes a weight; the export's parity check
compares the tidied graph with the Keras model.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

# Ops that pass their first input's values through, only reshaped, cast or broadcast: zeros
# in, zeros out.
_VALUE_KEEPING = {"Unsqueeze", "Squeeze", "Expand", "Reshape", "Cast", "Identity"}
_LSTM_INITIAL_STATES = (5, 6)  # initial_h, initial_c: optional inputs of ONNX's LSTM


def tidy(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` (changed in place) with constant Tensordot shapes, no zero LSTM states, and
    without the nodes that nothing reads any more."""
    for _ in range(2):  # a Tensordot's output shape is known once the one before is constant
        _constant_tensordot_shapes(proto)
    _drop_zero_lstm_states(proto.graph)
    _drop_unread(proto.graph)
    return proto


def _static_shapes(proto: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Each tensor's inferred shape, None where a dimension is unknown (the batch)."""
    graph = shape_inference.infer_shapes(proto).graph
    return {
        value.name: [
            d.dim_value if d.HasField("dim_value") else None
            for d in value.type.tensor_type.shape.dim
        ]
        for value in [*graph.value_info, *graph.input, *graph.output]
        if value.type.tensor_type.HasField("shape")
    }


def _constant_tensordot_shapes(proto: onnx.ModelProto) -> None:
    """``Reshape(X (B, T, F)) -> MatMul(W (F, N)) -> Reshape`` with shapes computed at run time:
    the shapes become constants ``[-1, F]`` and ``[-1, T, N]``."""
    graph, shapes = proto.graph, _static_shapes(proto)
    weights = {t.name: t for t in graph.initializer}
    producer = {output: node for node in graph.node for output in node.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    for node in graph.node:
        weight = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        before = producer.get(node.input[0])
        after = readers.get(node.output[0], [])
        if weight is None or before is None or before.op_type != "Reshape" or len(after) != 1:
            continue
        sequence = shapes.get(before.input[0])
        if after[0].op_type != "Reshape" or sequence is None or len(sequence) != 3:
            continue
        (steps, features), (rows, units) = sequence[1:], weight.dims
        if steps is None or features != rows:
            continue
        for reshape, shape in ((before, [-1, features]), (after[0], [-1, steps, units])):
            if reshape.input[1] not in weights:
                reshape.input[1] = _add_constant(graph, f"{reshape.output[0]}/shape", shape)


def _add_constant(graph: onnx.GraphProto, name: str, values: list[int]) -> str:
    graph.initializer.append(numpy_helper.from_array(np.array(values, np.int64), name))
    return name


def _drop_zero_lstm_states(graph: onnx.GraphProto) -> None:
    """Leave out LSTM initial states that are zeros (built from a zero constant)."""
    weights = {t.name: t for t in graph.initializer}
    producer = {output: node for node in graph.node for output in node.output}

    def is_zeros(name: str) -> bool:
        if name in weights:
            return not np.any(numpy_helper.to_array(weights[name]))
        node = producer.get(name)
        if node is None:
            return False
        if node.op_type == "Concat":
            return all(is_zeros(part) for part in node.input)
        return node.op_type in _VALUE_KEEPING and is_zeros(node.input[0])

    for node in graph.node:
        if node.op_type == "LSTM":
            for index in _LSTM_INITIAL_STATES:
                if index < len(node.input) and node.input[index] and is_zeros(node.input[index]):
                    node.input[index] = ""


def _drop_unread(graph: onnx.GraphProto) -> None:
    """Remove the nodes and weights whose outputs nothing reads (the graph's outputs count)."""
    nodes = list(graph.node)
    while True:
        read = {name for node in nodes for name in _names_read(node)}
        read |= {output.name for output in graph.output}
        kept = [node for node in nodes if any(name in read for name in node.output)]
        if len(kept) == len(nodes):
            break
        nodes = kept
    read = {name for node in nodes for name in _names_read(node)}
    weights = [t for t in graph.initializer if t.name in read]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(weights)


def _names_read(node: onnx.NodeProto) -> set[str]:
    """The tensors ``node`` reads, with those its subgraphs (a Loop's body) read from outside."""
    names = set(node.input)
    for attribute in node.attribute:
        for subgraph in [attribute.g, *attribute.graphs]:
            for inner in subgraph.node:
                names |= _names_read(inner)
    return names
