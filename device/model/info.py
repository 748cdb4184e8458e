"""What ``vega-emu model info`` reports: per-layer costs, totals and the size of one LR."""

from __future__ import annotations

import math
from typing import Any

from device.learning.layers import total_macs
from device.model.bundle import ModelBundle
from device.model.replays import REPLAYS

LR_BITS = (32, 8, 7, 6)
LR_OVERHEAD_BYTES = 8  # per quantized LR: one float32 scale + one float32 zero point


def lr_bytes(numel: int, bits: int, overhead: int = LR_OVERHEAD_BYTES) -> int:
    """Bytes of one latent replay of ``numel`` values at ``bits`` per value.

    32 bits is plain float32 (``4 * numel``, no overhead); below that the codes are bit-packed,
    ``ceil(numel * bits / 8)`` bytes, plus ``overhead`` bytes for the per-LR scale and zero point.
    """
    if numel < 1 or not 1 <= bits <= 32:
        raise ValueError(f"need numel >= 1 and 1 <= bits <= 32, got {numel}, {bits}")
    if bits == 32:
        return 4 * numel
    return math.ceil(numel * bits / 8) + overhead


def bundle_report(bundle: ModelBundle) -> dict[str, Any]:
    """A JSON-ready description of a bundle (layers, totals, LR sizes)."""
    layers = bundle.layers()
    numel = math.prod(bundle.lr_shape)
    return {
        "name": bundle.name,
        "path": str(bundle.path),
        "input": {"shape": list(bundle.input_shape), "dtype": bundle.input.dtype},
        "num_classes": bundle.num_classes,
        "lr": {
            "tensor": bundle.lr_tensor,
            "shape": list(bundle.lr_shape),
            "numel": numel,
            "bytes": {str(b): lr_bytes(numel, b) for b in LR_BITS},
            "overhead_bytes": LR_OVERHEAD_BYTES,
            "overhead": "per LR below 32 bits: float32 scale + float32 zero point",
        },
        "factory_replays": _replays(bundle),
        "layers": [
            {
                "name": la.name,
                "kind": la.kind,
                "out_shape": list(la.out_shape),
                "params": la.params,
                "macs": la.macs,
                "stage": "adaptive" if la.adaptive else "frozen",
            }
            for la in layers
        ],
        "totals": {
            "macs": total_macs(layers),
            "macs_frozen": total_macs(layers, adaptive=False),
            "macs_adaptive": total_macs(layers, adaptive=True),
            "params": sum(la.params for la in layers),
            "params_adaptive": sum(la.params for la in layers if la.adaptive),
        },
    }


def _replays(bundle: ModelBundle) -> dict[str, Any] | None:
    """The factory replays a new node's memory starts from; None when the bundle has none."""
    replays = bundle.factory_replays
    if replays is None:
        return None
    return {
        "file": REPLAYS,
        "count": len(replays),
        "bits": replays.bits,
        "bytes": replays.lrs.nbytes,
        "per_class": {str(c): n for c, n in replays.class_counts().items()},
    }


__all__ = ["LR_BITS", "LR_OVERHEAD_BYTES", "bundle_report", "lr_bytes"]
