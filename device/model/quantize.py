"""INT8 static quantization of the frozen stage with ``onnxruntime.quantization``.

Format QOperator (``QLinearConv``, ``QGemm``, ``QLinearAveragePool``, ...): int8 weights
(per output channel), uint8 activations, MinMax calibration on the data given.

Pre-processing runs the graph optimizer and ONNX's own shape inference, not onnxruntime's
symbolic shape inference: that one needs sympy (no longer installed with onnxruntime since 1.32)
and only adds something for graphs whose shapes depend on symbolic dimensions (transformers);
a frozen CNN stage has fixed C, H, W and a batch dimension, which ONNX's inference types fully.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx

from device.model.errors import ExportError

QUANTIZED_OPS = frozenset(
    [
        "QLinearConv",
        "QLinearMatMul",
        "QGemm",
        "ConvInteger",
        "MatMulInteger",
        "QLinearAdd",
        "QLinearAveragePool",
        "QLinearGlobalAveragePool",
        "DequantizeLinear",
        "QuantizeLinear",
    ]
)
COMPUTE_OPS = frozenset(["QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger"])


def quantized_ops(model: onnx.ModelProto) -> dict[str, int]:
    """Count of each quantized operator type in ``model``."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type in QUANTIZED_OPS:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


class _Reader:
    """``CalibrationDataReader``: feeds the calibration set in batches."""

    def __init__(self, input_name: str, data: np.ndarray, batch: int = 64) -> None:
        self._batches = iter(
            [{input_name: data[i : i + batch]} for i in range(0, len(data), batch)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def rewind(self) -> None:  # pragma: no cover - not used by MinMax
        pass


def quantize_int8(model: onnx.ModelProto, calibration: np.ndarray, out_path: Path) -> None:
    """Quantize ``model`` (FP32, one float input) statically to INT8 into ``out_path``.

    ``calibration`` is already-normalised float32 input ``[N, *input_shape]``.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if calibration.dtype != np.float32 or len(calibration) == 0:
        raise ExportError("calibration data must be a non-empty float32 array")
    input_name = model.graph.input[0].name
    reader = _Reader(input_name, calibration)
    CalibrationDataReader.register(_Reader)
    with tempfile.TemporaryDirectory(prefix="vega-quant-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        pre = Path(tmp) / "pre.onnx"
        onnx.save(model, str(fp32))
        try:
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
            quantize_static(
                str(pre),
                str(out_path),
                reader,
                quant_format=QuantFormat.QOperator,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
            )
        except Exception as exc:  # onnxruntime raises many unrelated types
            raise ExportError(f"INT8 quantization failed: {exc}") from exc
    counts = quantized_ops(onnx.load(str(out_path)))
    if not COMPUTE_OPS & counts.keys():
        raise ExportError(f"quantized model has no quantized compute operators ({counts})")


__all__ = ["COMPUTE_OPS", "QUANTIZED_OPS", "quantize_int8", "quantized_ops"]
