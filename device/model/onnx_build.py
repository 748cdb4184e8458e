"""Numpy layers -> an FP32 ONNX graph (built with ``onnx.helper``), for the frozen stage."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from device.learning.nn.base import LayerSpec

OPSET = 13
IR_VERSION = 8
INPUT_NAME = "input"


def _conv(spec: LayerSpec, x: str, out: str) -> onnx.NodeProto:
    a = spec.attrs
    k = int(a.get("kernel", 1))
    s = int(a.get("stride", 1))
    p = int(a.get("padding", 0))
    group = int(a["channels"]) if spec.op == "depthwise" else 1
    axes = 1 if spec.op == "conv1d" else 2
    return helper.make_node(
        "Conv",
        [x, f"{spec.name}.weight", f"{spec.name}.bias"],
        [out],
        name=spec.name,
        kernel_shape=[k] * axes,
        strides=[s] * axes,
        pads=[p] * (2 * axes),
        group=group,
    )


def layers_to_onnx(
    specs: Sequence[LayerSpec],
    params: Mapping[str, np.ndarray],
    in_shape: tuple[int, ...],
    *,
    output_name: str,
    graph_name: str = "frozen",
) -> onnx.ModelProto:
    """An ONNX model computing the layer chain on ``input [N, *in_shape]`` (float32).

    ``params`` uses the Sequential keys (``"<layer>.<tensor>"``); they become initializers of the
    same name. The last layer's output is called ``output_name``.
    """
    nodes: list[onnx.NodeProto] = []
    inits: dict[str, np.ndarray] = {}
    x = INPUT_NAME
    for n, spec in enumerate(specs):
        out = output_name if n == len(specs) - 1 else f"{spec.name}.out"
        name, op = spec.name, spec.op
        own = {k: v for k, v in params.items() if k.startswith(f"{name}.")}
        inits.update({k: np.asarray(v, np.float32) for k, v in own.items()})
        if op in ("conv", "conv1d", "pointwise", "depthwise"):
            nodes.append(_conv(spec, x, out))
        elif op == "linear":
            ins = [x, f"{name}.weight", f"{name}.bias"]
            nodes.append(helper.make_node("Gemm", ins, [out], name=name, transB=1))
        elif op == "batchnorm":
            ins = [x] + [f"{name}.{t}" for t in ("weight", "bias", "running_mean", "running_var")]
            eps = float(spec.attrs.get("eps", 1e-5))
            nodes.append(helper.make_node("BatchNormalization", ins, [out], name=name, epsilon=eps))
        elif op == "relu":
            nodes.append(helper.make_node("Relu", [x], [out], name=name))
        elif op == "relu6":
            inits[f"{name}.min"] = np.array(0.0, np.float32)
            inits[f"{name}.max"] = np.array(6.0, np.float32)
            ins = [x, f"{name}.min", f"{name}.max"]
            nodes.append(helper.make_node("Clip", ins, [out], name=name))
        elif op in ("avgpool", "avgpool1d"):
            k, s = int(spec.attrs.get("kernel", 2)), int(spec.attrs.get("stride", 2))
            axes = 1 if op == "avgpool1d" else 2
            nodes.append(
                helper.make_node(
                    "AveragePool",
                    [x],
                    [out],
                    name=name,
                    kernel_shape=[k] * axes,
                    strides=[s] * axes,
                )
            )
        elif op == "globalavgpool":
            nodes.append(helper.make_node("GlobalAveragePool", [x], [f"{name}.gap"], name=name))
            nodes.append(
                helper.make_node("Flatten", [f"{name}.gap"], [out], name=f"{name}_flat", axis=1)
            )
        elif op == "flatten":
            nodes.append(helper.make_node("Flatten", [x], [out], name=name, axis=1))
        else:  # pragma: no cover - LayerSpec validates ops
            raise ValueError(f"layer {name!r}: op {op!r} cannot be exported")
        x = out
    graph = helper.make_graph(
        nodes,
        graph_name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", *in_shape])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="vega-emu"
    )
    model.ir_version = IR_VERSION
    model = onnx.shape_inference.infer_shapes(model)
    onnx.checker.check_model(model)
    return model


__all__ = ["INPUT_NAME", "OPSET", "layers_to_onnx"]
