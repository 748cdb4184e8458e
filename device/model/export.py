"""Write a bundle directory from an FP32 frozen ONNX model, calibration data and a numpy head."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from device.learning.layers import LayerInfo
from device.learning.nn.sequential import Sequential
from device.model.bundle import (
    ADAPTIVE,
    FORMAT,
    FROZEN,
    MANIFEST,
    VERSION,
    InputSpec,
    ModelBundle,
    layer_info_table,
)
from device.model.errors import ExportError
from device.model.quantize import quantize_int8
from device.model.replays import (
    FACTORY_LR_SIZE,
    REPLAYS,
    pick_factory,
    replays_table,
    write_replays,
)
from device.model.toml_out import dumps

FROZEN_FP32 = "frozen_fp32.onnx"


def run_onnx(model: onnx.ModelProto | Path, x: np.ndarray) -> np.ndarray:
    """Run a one-input ONNX model on CPU (one thread) and return its first output as float32."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    src = str(model) if isinstance(model, Path) else model.SerializeToString()
    try:
        sess = ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
        out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    except Exception as exc:  # onnxruntime's exceptions share no useful base class
        raise ExportError(f"onnxruntime could not run the model: {exc}") from exc
    return np.asarray(out, np.float32)


def write_bundle(
    out_dir: Path,
    *,
    name: str,
    input_spec: InputSpec,
    frozen_fp32: onnx.ModelProto,
    calibration: np.ndarray,
    frozen_layers: Sequence[LayerInfo],
    head: Sequential,
    num_classes: int,
    meta: Mapping[str, Any] | None = None,
    keep_fp32: bool = True,
    factory: tuple[np.ndarray, np.ndarray] | None = None,
) -> ModelBundle:
    """Quantize the frozen stage, save the head and the manifest into ``out_dir``.

    ``calibration`` is raw input (wire dtype, ``[N, *input_spec.shape]``); it is normalised here.
    With ``factory`` (the raw training input and its labels), the bundle carries factory replays:
    the INT8 frozen stage's latents of a class-balanced subset of at most
    :data:`~device.model.replays.FACTORY_LR_SIZE` of them (:mod:`device.model.replays`).
    ``out_dir`` must not exist or be empty. Returns the bundle as loaded back from disk.
    """
    from safetensors.numpy import save_file

    if out_dir.exists() and any(out_dir.iterdir()):
        raise ExportError(f"output directory {out_dir} is not empty")
    if calibration.shape[1:] != input_spec.shape:
        raise ExportError(
            f"calibration data shape {calibration.shape[1:]} != input {input_spec.shape}"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    calib = input_spec.normalize(calibration)
    lr_tensor = frozen_fp32.graph.output[0].name
    lr_shape = tuple(int(d) for d in run_onnx(frozen_fp32, calib[:1]).shape[1:])
    quantize_int8(frozen_fp32, calib, out_dir / FROZEN)
    if keep_fp32:
        onnx.save(frozen_fp32, str(out_dir / FROZEN_FP32))
    save_file(
        {k: np.ascontiguousarray(v, np.float32) for k, v in head.params().items()},
        str(out_dir / ADAPTIVE),
    )
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "name": name,
        **dict(meta or {}),
        "input": {
            "shape": list(input_spec.shape),
            "dtype": input_spec.dtype,
            "mean": list(input_spec.mean),
            "std": list(input_spec.std),
        },
        "lr": {"tensor": lr_tensor, "shape": list(lr_shape)},
        "classes": {"count": num_classes},
        "frozen": {
            "file": FROZEN,
            "quantization": "int8 static (onnxruntime QOperator, per-channel int8 weights, "
            "uint8 activations, MinMax)",
            "calibration_samples": len(calibration),
            "layers": [layer_info_table(i) for i in frozen_layers],
        },
        "adaptive": {
            "file": ADAPTIVE,
            "layers": [{"name": s.name, "op": s.op, "attrs": dict(s.attrs)} for s in head.specs()],
        },
    }
    if factory is not None:
        x, y = factory
        keep = pick_factory(y)
        latents = run_onnx(out_dir / FROZEN, input_spec.normalize(x[keep]))
        replays = write_replays(out_dir / REPLAYS, latents, y[keep])
        source = (
            f"INT8 frozen stage on {len(keep)} of {len(y)} factory training samples, class-balanced"
        )
        manifest["replays"] = replays_table(replays, FACTORY_LR_SIZE, source)
    (out_dir / MANIFEST).write_text(dumps(manifest), "utf-8")
    return ModelBundle.load(out_dir)


__all__ = ["FROZEN_FP32", "run_onnx", "write_bundle"]
