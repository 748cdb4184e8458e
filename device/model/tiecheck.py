"""Settle the few window sums the error bound of :mod:`device.model.fastgraph` cannot.

For a window sum near a tie the bound cannot tell whether onnxruntime's float pool and the
integer depthwise conv round alike, so both kernels are run here, in onnxruntime itself, on
EVERY uint8 window with that sum (at most a few million windows of 2 or 4 elements, fed in
chunks): the rewrite stands only if each one gives the same byte.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MAX_CHECKED_WINDOW = 4
CHUNK_WINDOWS = 1 << 18


def windows_summing_to(total: int, window: int) -> Iterator[np.ndarray]:
    """Every uint8 window of ``window`` elements whose sum is ``total``, as ``[n, window]`` chunks.

    Row-major order inside the window (the order the pool reads it). ``window`` is 1..4.
    """
    if not 1 <= window <= MAX_CHECKED_WINDOW:
        raise ValueError(f"window {window} must be 1..{MAX_CHECKED_WINDOW}")
    values = np.arange(256, dtype=np.int32)
    lead = np.zeros((1, 0), np.int32)
    for _ in range(max(window - 2, 0)):
        lead = np.concatenate(
            [np.repeat(lead, 256, axis=0), np.tile(values, len(lead))[:, None]], axis=1
        )
    lead_sum = lead.sum(axis=1)
    if window == 1:
        if 0 <= total <= 255:
            yield np.array([[total]], np.uint8)
        return
    for v in values:
        last = total - lead_sum - v
        keep = (last >= 0) & (last <= 255)
        if keep.any():
            n = int(keep.sum())
            rows = np.concatenate(
                [lead[keep], np.full((n, 1), v, np.int32), last[keep, None]], axis=1
            )
            yield rows.astype(np.uint8)


def agree_on_sums(
    pool: onnx.NodeProto,
    conv: onnx.NodeProto,
    consts: dict[str, TensorProto],
    opsets: Sequence[onnx.OperatorSetIdProto],
    kernel: list[int],
    sums: np.ndarray,
) -> bool:
    """True when ``pool`` and its replacement ``conv`` give the same bytes on every window
    whose sum is in ``sums``, run by onnxruntime on one channel.

    ``consts`` holds the scales and zero points both nodes read; ``kernel`` is the window shape,
    which must equal the strides (windows side by side along the last axis).
    """
    import onnxruntime as ort

    window = int(np.prod(kernel))
    if window > MAX_CHECKED_WINDOW:
        return False
    session = ort.InferenceSession(
        _pair_model(pool, conv, consts, opsets, kernel).SerializeToString(),
        providers=["CPUExecutionProvider"],
    )
    for total in sums:
        buffered: list[np.ndarray] = []
        for rows in windows_summing_to(int(total), window):
            buffered.append(rows)
            if sum(len(r) for r in buffered) >= CHUNK_WINDOWS:
                if not _same(session, np.concatenate(buffered), kernel):
                    return False
                buffered = []
        if buffered and not _same(session, np.concatenate(buffered), kernel):
            return False
    return True


def _same(session: Any, rows: np.ndarray, kernel: list[int]) -> bool:
    """Both outputs equal on ``rows`` (``[n, window]``) laid out as windows side by side."""
    if len(rows) == 1:
        rows = np.concatenate([rows, np.zeros_like(rows)])  # a lone window would be "global"
    n = len(rows)
    x: np.ndarray
    if len(kernel) == 1:
        x = rows.reshape(1, 1, n * kernel[0])
    else:
        kh, kw = kernel
        x = rows.reshape(n, kh, kw).transpose(1, 0, 2).reshape(1, 1, kh, n * kw)
    pooled, conv = session.run(["pooled", "conv"], {"x": np.ascontiguousarray(x)})
    return bool(np.array_equal(pooled, conv))


def _pair_model(
    pool: onnx.NodeProto,
    conv: onnx.NodeProto,
    consts: dict[str, TensorProto],
    opsets: Sequence[onnx.OperatorSetIdProto],
    kernel: list[int],
) -> onnx.ModelProto:
    """One-channel model running ``pool`` and ``conv`` side by side on the same input ``x``."""
    p = onnx.NodeProto()
    p.CopyFrom(pool)
    p.input[0], p.output[0] = "x", "pooled"
    c = onnx.NodeProto()
    c.CopyFrom(conv)
    c.input[0], c.output[0] = "x", "conv"
    for attr in c.attribute:
        if attr.name == "group":
            attr.i = 1
    inits = [consts[name] for name in dict.fromkeys([*p.input[1:], *c.input[1:]]) if name in consts]
    inits = [t for t in inits if t.name != c.input[3]]
    inits.append(numpy_helper.from_array(np.ones((1, 1, *kernel), np.int8), c.input[3]))
    spatial: list[int | str] = [*kernel[:-1], "W"]
    graph = helper.make_graph(
        [p, c],
        "pool_vs_conv",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 1, *spatial])],
        [
            helper.make_tensor_value_info("pooled", TensorProto.UINT8, None),
            helper.make_tensor_value_info("conv", TensorProto.UINT8, None),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=list(opsets))
    model.ir_version = 8
    return model


__all__ = ["MAX_CHECKED_WINDOW", "agree_on_sums", "windows_summing_to"]
