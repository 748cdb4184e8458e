"""What a learning event looks like: the continual-learning settings the cost model charges."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from device.energy.errors import CostConfigError


@dataclass(frozen=True, slots=True)
class CostConfig:
    """Continual-learning settings of a node (the paper's defaults).

    ``lr_size`` is N_LR, the most latent replays (LRs) the memory holds; ``lr_bits`` is the width
    of one stored LR element (32 means FP32, unquantized); ``lr_meta_bytes`` is stored next to
    each quantized LR (FP32 scale and zero point, as :mod:`device.learning.replay` stores them).
    ``events_per_hour`` is the nominal rate of learning events, used until two events have been
    seen.
    """

    lr_size: int = 1500
    lr_bits: int = 8
    new_per_event: int = 300
    mb_size: int = 128
    new_per_mb: int = 21
    epochs: int = 4
    events_per_hour: float = 1.0
    lr_meta_bytes: int = 8

    def __post_init__(self) -> None:
        for key in ("lr_size", "new_per_event", "lr_meta_bytes"):
            if getattr(self, key) < 0:
                raise CostConfigError(f"{key} must be >= 0, got {getattr(self, key)}")
        for key in ("mb_size", "epochs"):
            if getattr(self, key) < 1:
                raise CostConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if not (1 <= self.lr_bits <= 8 or self.lr_bits == 32):
            raise CostConfigError(f"lr_bits must be in 1..8 or 32 (FP32), got {self.lr_bits}")
        if not 1 <= self.new_per_mb <= self.mb_size:
            raise CostConfigError(
                f"new_per_mb must be in 1..mb_size ({self.mb_size}), got {self.new_per_mb}"
            )
        rate = self.events_per_hour
        if not (math.isfinite(rate) and rate > 0):
            raise CostConfigError(f"events_per_hour must be > 0, got {rate!r}")

    def lr_bytes(self, elements: int) -> int:
        """Bytes of one stored LR of ``elements`` values: packed codes (+ scale if quantized)."""
        meta = self.lr_meta_bytes if self.lr_bits < 32 else 0
        return math.ceil(elements * self.lr_bits / 8) + meta

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


__all__ = ["CostConfig"]
