"""Latent replays without I/O: per-LR quantization, bit packing, the AR1* replacement policy,
the factory replays a memory starts from.

The SQLite-backed memory that uses them is :mod:`device.node.store.replay`.
"""

from device.learning.replay.errors import QuantizationError, ReplayError
from device.learning.replay.factory import (
    FactoryReplays,
    balanced_counts,
    balanced_pick,
    requantize,
)
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
    "FactoryReplays",
    "QuantizationError",
    "QuantizedLR",
    "ReplayError",
    "SlotPlacement",
    "ar1_quota",
    "balanced_counts",
    "balanced_pick",
    "dequantize",
    "pack_codes",
    "plan_placement",
    "quantize",
    "requantize",
    "row_bytes",
    "unpack_codes",
]
