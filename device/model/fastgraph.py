"""An in-memory rewrite of a frozen INT8 graph that onnxruntime runs faster, bit for bit the same.

onnxruntime's ``QLinearAveragePool`` (CPU) dequantizes its whole input to float32, sums each
window in float, divides by the window size and requantizes with ``nearbyintf``: on the default
model the three pools take almost half of the frozen stage's time. A depthwise ``QLinearConv``
with all-ones int8 weights (``group = C``, weight scale ``1/K`` for a window of ``K`` elements)
computes the same average with an exact int32 window sum and one float multiply, several times
faster.

The two round differently only when the exact average sits within a few float32 ulps of a
half-integer (a tie). With input zero point 0 every reachable window sum is an integer
``s`` in ``[0, 255 K]``, the exact output before rounding is ``v = s x_scale / (K y_scale)``,
and both kernels compute ``v`` with a relative error of at most ``(K + 3)`` ulps (``K - 1`` sums
and three roundings in the pool, two in the conv). :func:`near_ties` checks every ``s``
against that bound; the few sums it cannot clear are settled by running both kernels on every
window with that sum (:mod:`device.model.tiecheck`). So a pool is rewritten only if no input
can tell the two apart. A pool that does not match the pattern exactly (padding, ceil mode,
channels last, int8 input, a zero point, a window covering the whole image, which onnxruntime
computes another way) is left as is.

The bundle's file is never changed: :func:`fast_graph` returns a rewritten copy, or ``None``
when nothing was rewritten.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from device.model.tiecheck import agree_on_sums

POOL_OP = "QLinearAveragePool"
MS_DOMAIN = "com.microsoft"
MAX_WINDOW = 16
MAX_CHECKED_SUMS = 4  # near-tie window sums settled by running both kernels (tiecheck)
ULP_32 = 2.0**-24
_POOL_ATTRS = frozenset(
    [
        "kernel_shape",
        "strides",
        "pads",
        "auto_pad",
        "ceil_mode",
        "count_include_pad",
        "channels_last",
    ]
)


@dataclass(frozen=True, slots=True)
class PoolScales:
    """Quantization of one ``QLinearAveragePool``: input and output scale and zero point."""

    x_scale: float
    x_zero_point: int
    y_scale: float
    y_zero_point: int
    window: int  # K, elements per window

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"pool window {self.window} must be >= 1")


def near_ties(scales: PoolScales) -> np.ndarray | None:
    """Window sums whose average the two kernels might round apart; ``None``: no proof possible.

    ``None`` unless the conditions the error analysis in the module docstring needs hold (zero
    input zero point, a power-of-two window of at most ``MAX_WINDOW``, normal scales, no int32
    overflow); else the reachable window sums ``s`` whose exact average lies within the rounding
    bound of a tie (usually none).
    """
    k = scales.window
    if scales.x_zero_point != 0 or k > MAX_WINDOW or k & (k - 1):
        return None
    tiny = float(np.finfo(np.float32).tiny)
    if not all(math.isfinite(s) and s >= tiny for s in (scales.x_scale, scales.y_scale)):
        return None
    ratio = scales.x_scale / (k * scales.y_scale)
    if scales.x_scale / k < tiny or not tiny <= ratio <= 2.0**12:
        return None
    sums = np.arange(0, 255 * k + 1)
    v = sums * ratio
    slack = np.abs(v - np.floor(v) - 0.5)
    bound = ((k + 3) * v + np.abs(v + scales.y_zero_point)) * ULP_32 * 1.01
    suspect: np.ndarray = sums[slack <= bound]
    return suspect


def pool_is_exact(scales: PoolScales) -> bool:
    """True when the error bound alone proves a depthwise all-ones ``QLinearConv`` gives the
    pool's bits for EVERY uint8 input (no window sum near a tie)."""
    suspect = near_ties(scales)
    return suspect is not None and not suspect.size


def fast_graph(model: onnx.ModelProto, sample: np.ndarray) -> onnx.ModelProto | None:
    """A copy of ``model`` with every provably exact average pool made a depthwise conv.

    ``sample`` is one valid feed for the model's first input (e.g. zeros ``[1, *input_shape]``):
    onnxruntime runs it once to learn each pool's input type and shape, which ONNX's own shape
    inference cannot give past a ``com.microsoft`` operator. ``None`` when no pool qualifies
    (the caller then uses the model as it is).
    """
    consts_names = {t.name for t in model.graph.initializer}
    fed = {i.name for i in model.graph.input}
    if len(fed - consts_names) != 1:
        return None  # the probe feeds one input
    pools = [
        n
        for n in model.graph.node
        if n.op_type == POOL_OP and n.domain == MS_DOMAIN and n.input and n.input[0] not in fed
    ]
    if not pools:
        return None
    shapes = _pool_inputs(model, sample, [n.input[0] for n in pools])
    consts = {t.name: t for t in model.graph.initializer}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    taken = {t.name for t in out.graph.initializer} | {v for n in out.graph.node for v in n.output}
    nodes = []
    changed = False
    for node in out.graph.node:
        conv = _pool_as_conv(node, consts, shapes, taken, model.opset_import)
        if conv is None:
            nodes.append(node)
            continue
        new_node, weights = conv
        nodes.append(new_node)
        out.graph.initializer.extend(weights)
        taken |= {w.name for w in weights}
        changed = True
    if not changed:
        return None
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def _pool_inputs(
    model: onnx.ModelProto, sample: np.ndarray, names: list[str]
) -> dict[str, tuple[np.dtype[np.generic], tuple[int, ...]]]:
    """dtype and shape of each named tensor when onnxruntime runs ``model`` on ``sample``."""
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

    errors = (ort_state.Fail, ort_state.InvalidArgument, ort_state.InvalidGraph)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    listed = {o.name for o in probe.graph.output}
    wanted = list(dict.fromkeys(n for n in names if n not in listed))
    probe.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in wanted)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    outputs = list(dict.fromkeys(names))
    try:
        session = ort.InferenceSession(
            probe.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )
        values = session.run(outputs, {session.get_inputs()[0].name: sample})
    except (*errors, ort_state.RuntimeException):
        return {}  # shapes unknown: no pool is rewritten
    arrays = [np.asarray(v) for v in values]
    return {n: (a.dtype, a.shape) for n, a in zip(outputs, arrays, strict=True)}


def _scalar(
    name: str, consts: dict[str, TensorProto], dtype: type[np.generic]
) -> float | int | None:
    tensor = consts.get(name)
    if tensor is None:
        return None
    arr = numpy_helper.to_array(tensor)
    if arr.dtype != dtype or arr.size != 1:
        return None
    value: float | int = arr.reshape(()).item()
    return value


def _pool_as_conv(
    node: onnx.NodeProto,
    consts: dict[str, TensorProto],
    shapes: dict[str, tuple[np.dtype[np.generic], tuple[int, ...]]],
    taken: set[str],
    opsets: Sequence[onnx.OperatorSetIdProto],
) -> tuple[onnx.NodeProto, list[TensorProto]] | None:
    """The depthwise conv that replaces ``node`` exactly, with its weight tensors, or ``None``."""
    if node.op_type != POOL_OP or node.domain != MS_DOMAIN or len(node.input) != 5:
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if not attrs.keys() <= _POOL_ATTRS or "kernel_shape" not in attrs:
        return None
    kernel = [int(k) for k in attrs["kernel_shape"]]
    strides = [int(s) for s in attrs.get("strides", [1] * len(kernel))]
    pads = [int(p) for p in attrs.get("pads", [0] * 2 * len(kernel))]
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    if (
        len(kernel) not in (1, 2)
        or len(strides) != len(kernel)
        or any(pads)
        or auto_pad not in (b"NOTSET", b"VALID")
        or attrs.get("ceil_mode", 0) != 0
        or attrs.get("channels_last", 0) != 0
    ):
        return None
    if node.input[0] not in shapes:
        return None
    dtype, dims = shapes[node.input[0]]
    if dtype != np.uint8 or len(dims) != len(kernel) + 2:
        return None
    channels, spatial = dims[1], list(dims[2:])
    if spatial == kernel or any(s < k for s, k in zip(spatial, kernel, strict=True)):
        return None  # a whole-image window runs onnxruntime's global-pool kernel instead
    x_scale = _scalar(node.input[1], consts, np.float32)
    x_zp = _scalar(node.input[2], consts, np.uint8)
    y_scale = _scalar(node.input[3], consts, np.float32)
    y_zp = _scalar(node.input[4], consts, np.uint8)
    if x_scale is None or x_zp is None or y_scale is None or y_zp is None:
        return None
    window = math.prod(kernel)
    scales = PoolScales(float(x_scale), int(x_zp), float(y_scale), int(y_zp), window)
    suspect = near_ties(scales)
    if suspect is None or len(suspect) > MAX_CHECKED_SUMS or (len(suspect) and strides != kernel):
        return None
    base = f"{node.output[0]}.fastgraph"
    if any(n.startswith(base) for n in taken):
        return None
    weights = [
        numpy_helper.from_array(np.ones((channels, 1, *kernel), np.int8), f"{base}.weight"),
        numpy_helper.from_array(np.array(1.0 / window, np.float32), f"{base}.weight_scale"),
        numpy_helper.from_array(np.array(0, np.int8), f"{base}.weight_zero_point"),
    ]
    conv = helper.make_node(
        "QLinearConv",
        [*node.input[:3], *(w.name for w in weights), *node.input[3:5]],
        list(node.output),
        name=f"{node.name or node.output[0]}.as_depthwise_conv",
        group=channels,
        kernel_shape=kernel,
        strides=strides,
        pads=[0] * 2 * len(kernel),
    )
    if len(suspect):
        with_weights = consts | {w.name: w for w in weights}
        if not agree_on_sums(node, conv, with_weights, opsets, kernel, suspect):
            return None
    return conv, weights


__all__ = ["MAX_WINDOW", "PoolScales", "fast_graph", "near_ties", "pool_is_exact"]
