"""Small values shared by several node messages."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self


@dataclass(frozen=True, slots=True)
class BatteryState:
    """State of charge (0..1) and energy left (J)."""

    soc: float
    remaining_j: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.soc <= 1.0 or self.remaining_j < 0:
            raise ValueError(f"battery state out of range: soc={self.soc}, J={self.remaining_j}")

    def to_dict(self) -> dict[str, float]:
        return {"soc": self.soc, "remaining_j": self.remaining_j}

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> Self:
        return cls(soc=float(obj["soc"]), remaining_j=float(obj["remaining_j"]))


__all__ = ["BatteryState"]
