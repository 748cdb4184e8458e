"""Latent replays without I/O: per-LR quantization, bit packing, the AR1* replacement policy.

The SQLite-backed memory that uses them is :mod:`device.node.store.replay`.
"""

from device.learning.replay.errors import QuantizationError, ReplayError
from device.learning.replay.policy import SlotPlacement, ar1_quota, plan_placement
from device.learning.replay.quant import (
    SUPPORTED_BITS,
    QuantizedLR,
    dequantize,
    pack_codes,
    quantize,
    row_bytes,
    unpack_codes,
)

__all__ = [
    "SUPPORTED_BITS",
    "QuantizationError",
    "QuantizedLR",
    "ReplayError",
    "SlotPlacement",
    "ar1_quota",
    "dequantize",
    "pack_codes",
    "plan_placement",
    "quantize",
    "row_bytes",
    "unpack_codes",
]
