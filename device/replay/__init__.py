"""Latent-replay memory: per-LR quantization, bit packing, AR1* replacement, SQLite storage."""

from device.replay.errors import (
    QuantizationError,
    ReplayConfigError,
    ReplayError,
    ReplayStateError,
    ReplayStorageError,
)
from device.replay.memory import ReplayConfig, ReplayMemory
from device.replay.policy import Placement, ar1_quota, plan_placement
from device.replay.quant import (
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
    "Placement",
    "QuantizationError",
    "QuantizedLR",
    "ReplayConfig",
    "ReplayConfigError",
    "ReplayError",
    "ReplayMemory",
    "ReplayStateError",
    "ReplayStorageError",
    "ar1_quota",
    "dequantize",
    "pack_codes",
    "plan_placement",
    "quantize",
    "row_bytes",
    "unpack_codes",
]
