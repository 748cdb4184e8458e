"""Reading ONNX models: constants, per-sample shapes and per-layer costs of a graph."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from device.learning.layers import LayerInfo, LayerKind
from device.model.errors import ExportError, UnsupportedModelError

_KINDS: dict[str, LayerKind] = {
    "Gemm": "linear",
    "MatMul": "linear",
    "BatchNormalization": "batchnorm",
    "Relu": "relu",
    "Clip": "relu",
    "AveragePool": "pool",
    "GlobalAveragePool": "pool",
    "Flatten": "flatten",
    "Reshape": "flatten",
    "Add": "add",
}


def load_onnx(path: Path) -> onnx.ModelProto:
    """Load and check an ONNX file; problems become :class:`ExportError` naming the file."""
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except (OSError, DecodeError, onnx.checker.ValidationError) as exc:
        raise ExportError(f"{path}: not a valid ONNX model: {exc}") from exc
    return model


def constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers and ``Constant`` node outputs, by tensor name."""
    out = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    out[node.output[0]] = numpy_helper.to_array(attr.t)
    return out


def graph_input(model: onnx.ModelProto) -> tuple[str, tuple[int, ...]]:
    """Name and per-sample shape of the model's one (float32) data input."""
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise UnsupportedModelError(f"model needs exactly one data input, has {len(inputs)}")
    inp = inputs[0]
    if inp.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise UnsupportedModelError(f"input {inp.name!r} must be float32")
    dims = [d.dim_value for d in inp.type.tensor_type.shape.dim][1:]
    if not dims or any(d <= 0 for d in dims):
        raise UnsupportedModelError(
            f"input {inp.name!r} needs a static per-sample shape, got {dims}"
        )
    return inp.name, tuple(dims)


def sample_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Per-sample shape of every tensor whose shape ONNX can infer (batch fixed to 1)."""
    m = copy.deepcopy(model)
    name, _ = graph_input(m)
    for inp in m.graph.input:
        if inp.name == name:
            inp.type.tensor_type.shape.dim[0].Clear()
            inp.type.tensor_type.shape.dim[0].dim_value = 1
    del m.graph.value_info[:]
    m = onnx.shape_inference.infer_shapes(m)
    shapes: dict[str, tuple[int, ...]] = {}
    for vi in [*m.graph.input, *m.graph.value_info, *m.graph.output]:
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        if dims and all(d > 0 for d in dims):
            shapes[vi.name] = tuple(dims[1:])
    return shapes


def layer_infos(model: onnx.ModelProto, *, adaptive: bool = False) -> list[LayerInfo]:
    """One cost entry per computing node of an FP32 graph (unknown ops are left out)."""
    consts = constants(model)
    shapes = sample_shapes(model)
    infos: list[LayerInfo] = []
    for i, node in enumerate(model.graph.node):
        if node.op_type == "Constant" or not node.input or node.input[0] not in shapes:
            continue
        if node.output[0] not in shapes:
            continue
        x, y = shapes[node.input[0]], shapes[node.output[0]]
        if not x or not y:
            continue
        name = node.name or f"{node.op_type}_{i}"
        params = sum(int(consts[t].size) for t in node.input[1:] if t in consts)
        if node.op_type == "Conv":
            w = consts.get(node.input[1])
            if w is None:
                continue
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            kernel = int(np.prod(w.shape[2:]))
            kind: LayerKind = (
                "depthwise"
                if group > 1 and group == w.shape[0]
                else "pointwise"
                if kernel == 1 and group == 1
                else "conv"
            )
            macs = int(w.shape[0] * w.shape[1] * kernel * math.prod(y[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            kind, macs = "linear", int(math.prod(y) * x[-1])
        elif node.op_type in _KINDS:
            kind = _KINDS[node.op_type]
            macs = math.prod(x) if kind == "batchnorm" else 0
            if node.op_type in ("Add", "Clip", "Reshape"):
                params = 0
        else:
            continue
        infos.append(LayerInfo(name, kind, x, y, params, macs, adaptive))
    return infos


__all__ = ["constants", "graph_input", "layer_infos", "load_onnx", "sample_shapes"]
