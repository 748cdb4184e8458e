"""Split an ONNX model at a tensor: frozen stage (ONNX, INT8) + adaptive stage (numpy head).

The adaptive stage must be a chain of: Conv (dense, 1x1, depthwise), Gemm, MatMul(+Add bias),
Relu, Clip(0, 6), BatchNormalization, AveragePool, GlobalAveragePool, Flatten/Reshape (to
``[N, -1]``), Dropout/Identity (dropped) and a final Softmax (dropped: the head outputs logits).
Anything else there is an :class:`UnsupportedModelError` naming the operator and node. The frozen
stage may hold any operator onnxruntime runs (residual ``Add`` included).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from device.learning.nn import (
    AvgPool,
    BatchNorm,
    Conv2d,
    DepthwiseConv2d,
    Flatten,
    GlobalAvgPool,
    Layer,
    Linear,
    PointwiseConv2d,
    ReLU,
    ReLU6,
    Sequential,
)
from device.model.bundle import InputSpec, ModelBundle
from device.model.errors import UnsupportedModelError
from device.model.export import write_bundle
from device.model.onnx_read import constants, graph_input, layer_infos, load_onnx

_SKIP = frozenset(["Dropout", "Identity"])


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _conv(node: onnx.NodeProto, c: dict[str, np.ndarray], name: str) -> Layer:
    a = _attrs(node)
    w = c[node.input[1]].astype(np.float32)
    bias = c[node.input[2]] if len(node.input) > 2 and node.input[2] else np.zeros(w.shape[0])
    k = list(a.get("kernel_shape", w.shape[2:]))
    strides = list(a.get("strides", [1, 1]))
    pads = list(a.get("pads", [0, 0, 0, 0]))
    group = int(a.get("group", 1))
    dil = list(a.get("dilations", [1, 1]))
    auto_pad = a.get("auto_pad", b"NOTSET")
    bad = (
        len(k) != 2 or k[0] != k[1] or strides[0] != strides[1] or len(set(pads)) > 1
        or set(dil) != {1} or auto_pad not in (b"NOTSET", b"VALID", "NOTSET", "VALID")
    )  # fmt: skip
    if bad:
        raise UnsupportedModelError(
            f"Conv node {node.name!r}: only square kernels, equal strides, symmetric padding, "
            f"no dilation are supported in the adaptive stage ({a})"
        )
    o, ci = int(w.shape[0]), int(w.shape[1])
    rng = np.random.default_rng(0)
    layer: Layer
    if group == 1 and k[0] == 1 and strides[0] == 1 and pads[0] == 0:
        layer = PointwiseConv2d(ci, o, name=name, rng=rng)
    elif group == 1:
        layer = Conv2d(ci, o, k[0], stride=strides[0], padding=pads[0], name=name, rng=rng)
    elif group == o and ci == 1:
        layer = DepthwiseConv2d(o, k[0], stride=strides[0], padding=pads[0], name=name, rng=rng)
    else:
        raise UnsupportedModelError(f"Conv node {node.name!r}: grouped convolution (group={group})")
    layer.params["weight"][...] = w
    layer.params["bias"][...] = np.asarray(bias, np.float32).reshape(-1)
    return layer


def _linear(node: onnx.NodeProto, c: dict[str, np.ndarray], name: str) -> Layer:
    a = _attrs(node)
    w = c[node.input[1]].astype(np.float32)
    if node.op_type == "Gemm":
        if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
            raise UnsupportedModelError(f"Gemm node {node.name!r}: transA/alpha/beta unsupported")
        if not a.get("transB", 0):
            w = w.T
    else:
        w = w.T  # MatMul: x [N, in] @ B [in, out]
    if w.ndim != 2:
        raise UnsupportedModelError(f"{node.op_type} node {node.name!r}: weight must be 2-D")
    layer = Linear(w.shape[1], w.shape[0], name=name, rng=np.random.default_rng(0))
    layer.params["weight"][...] = w
    if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]:
        layer.params["bias"][...] = np.broadcast_to(c[node.input[2]].reshape(-1), w.shape[:1])
    return layer


def _clip(node: onnx.NodeProto, c: dict[str, np.ndarray], name: str) -> Layer:
    a = _attrs(node)
    lo = a.get("min", c[node.input[1]] if len(node.input) > 1 and node.input[1] else None)
    hi = a.get("max", c[node.input[2]] if len(node.input) > 2 and node.input[2] else None)
    lo_v = None if lo is None else float(lo)
    hi_v = None if hi is None else float(hi)
    if lo_v == 0.0 and hi_v == 6.0:
        return ReLU6(name=name)
    if lo_v == 0.0 and (hi_v is None or hi_v == float("inf")):
        return ReLU(name=name)
    raise UnsupportedModelError(f"Clip node {node.name!r}: only Clip(0, 6) and Clip(0) supported")


def _bn(node: onnx.NodeProto, c: dict[str, np.ndarray], name: str) -> Layer:
    a = _attrs(node)
    if a.get("training_mode", 0):
        raise UnsupportedModelError(f"BatchNormalization node {node.name!r}: training_mode=1")
    scale = c[node.input[1]]
    layer = BatchNorm(len(scale), eps=float(a.get("epsilon", 1e-5)), name=name)
    for key, idx in (("weight", 1), ("bias", 2), ("running_mean", 3), ("running_var", 4)):
        layer.params[key][...] = c[node.input[idx]].astype(np.float32)
    return layer


def _pool(node: onnx.NodeProto, name: str) -> Layer:
    a = _attrs(node)
    k = list(a.get("kernel_shape", []))
    s = list(a.get("strides", k))
    if len(k) != 2 or k[0] != k[1] or s[0] != s[1] or any(a.get("pads", [0])) or a.get("ceil_mode"):
        raise UnsupportedModelError(f"AveragePool node {node.name!r}: needs square, unpadded")
    return AvgPool(int(k[0]), int(s[0]), name=name)


def adaptive_chain(model: onnx.ModelProto, at: str) -> Sequential:
    """The numpy head equivalent to the nodes that follow tensor ``at`` (a chain)."""
    c = constants(model)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for t in node.input:
            consumers.setdefault(t, []).append(node)
    outputs = {o.name for o in model.graph.output}
    layers: list[Layer] = []
    x, flat = at, False
    while x not in outputs:
        nodes = consumers.get(x, [])
        if len(nodes) != 1:
            names = [n.name for n in nodes]
            raise UnsupportedModelError(
                f"tensor {x!r} feeds {len(nodes)} nodes {names}: the adaptive stage must be a chain"
            )
        node = nodes[0]
        op, name = node.op_type, f"l{len(layers)}_{node.op_type.lower()}"
        others = [t for t in node.input[1:] if t and t not in c]
        if others:
            raise UnsupportedModelError(
                f"{op} node {node.name!r} takes activations {others} besides {x!r}: "
                "only chains (no residual connections) can be trained on the device"
            )
        if op == "Conv":
            layers.append(_conv(node, c, name))
        elif op in ("Gemm", "MatMul"):
            layers.append(_linear(node, c, name))
        elif op == "Add":
            last = layers[-1] if layers else None
            if last is None or "bias" not in last.params:
                raise UnsupportedModelError(
                    f"Add node {node.name!r}: only a bias after Conv/MatMul"
                )
            last.params["bias"] += c[node.input[1]].astype(np.float32).reshape(-1)
        elif op == "Relu":
            layers.append(ReLU(name=name))
        elif op == "Clip":
            layers.append(_clip(node, c, name))
        elif op == "BatchNormalization":
            layers.append(_bn(node, c, name))
        elif op == "AveragePool":
            layers.append(_pool(node, name))
        elif op == "GlobalAveragePool":
            layers.append(GlobalAvgPool(name=name))
            flat = True
        elif op in ("Flatten", "Reshape"):
            if op == "Reshape" and len(c.get(node.input[1], np.zeros(0))) != 2:
                raise UnsupportedModelError(f"Reshape node {node.name!r}: only to [N, -1]")
            if not flat:
                layers.append(Flatten(name=name))
        elif op == "Softmax" and node.output[0] in outputs:
            pass
        elif op not in _SKIP:
            raise UnsupportedModelError(
                f"operator {op} (node {node.name!r}) is not supported in the adaptive stage"
            )
        x = node.output[0]
    if not any(layer.trainable for layer in layers):
        raise UnsupportedModelError(f"nothing trainable after tensor {at!r}")
    return Sequential(layers)


def split_onnx(
    path: Path,
    at: str,
    out_dir: Path,
    *,
    calibration: np.ndarray | None = None,
    calib_samples: int = 32,
    seed: int = 0,
) -> ModelBundle:
    """Split the ONNX model at ``path`` after tensor ``at`` and write a bundle into ``out_dir``.

    The bundle input is the model's float32 input with identity normalisation. Without
    ``calibration`` the INT8 quantization is calibrated on ``calib_samples`` standard-normal
    synthetic inputs.
    """
    model = load_onnx(path)
    input_name, in_shape = graph_input(model)
    produced = {o for n in model.graph.node for o in n.output}
    if at not in produced:
        raise UnsupportedModelError(f"tensor {at!r} is not produced by any node of {path}")
    head = adaptive_chain(model, at)
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
        frozen = onnx.utils.Extractor(inferred).extract_model([input_name], [at])
    except (ValueError, onnx.shape_inference.InferenceError) as exc:
        raise UnsupportedModelError(f"cannot cut {path} at {at!r}: {exc}") from exc
    frozen.graph.output[0].type.tensor_type.ClearField("shape")
    if calibration is None:
        rng = np.random.default_rng(seed)
        calibration = rng.standard_normal((calib_samples, *in_shape)).astype(np.float32)
    classes = head.out_shape(tuple(int(d) for d in _lr_shape(frozen, in_shape)))
    return write_bundle(
        out_dir,
        name=path.stem,
        input_spec=InputSpec(in_shape, "float32", (0.0,), (1.0,)),
        frozen_fp32=frozen,
        calibration=calibration.astype(np.float32),
        frozen_layers=layer_infos(frozen),
        head=head,
        num_classes=int(classes[0]),
        meta={"description": f"{path.name} split at tensor {at!r}", "source": str(path)},
    )


def _lr_shape(frozen: onnx.ModelProto, in_shape: tuple[int, ...]) -> tuple[int, ...]:
    from device.model.export import run_onnx

    x = np.zeros((1, *in_shape), np.float32)
    return tuple(run_onnx(frozen, x).shape[1:])


__all__ = ["adaptive_chain", "split_onnx"]
