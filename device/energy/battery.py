"""The battery of a node: energy in, energy out, over simulated time (pure, no clock of its own)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from device.energy.errors import BatteryStateError
from device.energy.profile import Profile


def _finite_nonneg(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BatteryStateError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise BatteryStateError(f"{name} must be finite and >= 0, got {value!r}")
    return float(value)


@dataclass(slots=True)
class Battery:
    """Remaining energy of a node's battery.

    Every draw (:meth:`draw`, :meth:`sleep`) returns the joules actually taken, which is the
    request until the battery is empty; ``drawn_j`` accumulates them, so
    ``capacity_j - remaining_j == drawn_j`` for a battery started full that harvests nothing
    (:meth:`exchange` adds harvested energy, up to the capacity).
    """

    capacity_j: float
    remaining_j: float
    sleep_w: float
    drawn_j: float = 0.0

    def __post_init__(self) -> None:
        for name in ("capacity_j", "remaining_j", "sleep_w", "drawn_j"):
            _finite_nonneg(name, getattr(self, name))
        if self.capacity_j == 0:
            raise BatteryStateError("capacity_j must be > 0")
        if self.remaining_j > self.capacity_j:
            raise BatteryStateError(
                f"remaining_j ({self.remaining_j}) exceeds capacity_j ({self.capacity_j})"
            )

    @classmethod
    def from_profile(cls, profile: Profile) -> Battery:
        """A full battery of ``profile`` (mAh x 3.6 x V joules), sleeping at its P_sleep."""
        return cls(
            capacity_j=profile.battery_j, remaining_j=profile.battery_j, sleep_w=profile.sleep_w
        )

    @property
    def soc(self) -> float:
        """State of charge, 0..1."""
        return self.remaining_j / self.capacity_j

    @property
    def depleted(self) -> bool:
        return self.remaining_j <= 0.0

    def draw(self, joules: float) -> float:
        """Take ``joules`` (>= 0) from the battery; return what was actually taken."""
        amount = _finite_nonneg("joules", joules)
        taken = min(amount, self.remaining_j)
        self.remaining_j = self.remaining_j - taken if taken < self.remaining_j else 0.0
        self.drawn_j += taken
        return taken

    def exchange(self, spent_j: float, gained_j: float) -> tuple[float, float]:
        """Spend ``spent_j`` and gain ``gained_j`` over the same interval (sleep under a
        harvester): the charge moves by their difference, never below 0 nor above the
        capacity. Returns ``(taken, kept)``: the joules taken (counted in ``drawn_j``) and the
        harvested joules the battery kept (the rest found it full)."""
        spent = _finite_nonneg("spent_j", spent_j)
        gained = _finite_nonneg("gained_j", gained_j)
        if gained >= spent:
            kept = min(gained, self.capacity_j - self.remaining_j + spent)
            taken = spent
            self.remaining_j = min(self.capacity_j, self.remaining_j + kept - spent)
        else:
            kept = gained
            taken = min(spent, self.remaining_j + gained)
            self.remaining_j = max(0.0, self.remaining_j + gained - spent)
        self.drawn_j += taken
        return taken, kept

    def sleep(self, seconds: float) -> float:
        """Sleep ``seconds`` of simulated time at P_sleep; return the joules taken."""
        return self.draw(self.sleep_w * _finite_nonneg("seconds", seconds))

    def to_dict(self) -> dict[str, float]:
        return {
            "capacity_j": self.capacity_j,
            "remaining_j": self.remaining_j,
            "sleep_w": self.sleep_w,
            "drawn_j": self.drawn_j,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Battery:
        keys = ("capacity_j", "remaining_j", "sleep_w", "drawn_j")
        missing = [key for key in keys if key not in data]
        if missing:
            raise BatteryStateError(f"battery state is missing {missing}")
        return cls(**{key: _finite_nonneg(key, data[key]) for key in keys})


__all__ = ["Battery"]
