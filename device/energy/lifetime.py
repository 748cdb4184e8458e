"""Projected remaining lifetime from the energy left and the average power at an event rate."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from device.energy.battery import Battery
from device.energy.errors import BatteryStateError, CostConfigError

HOUR_S = 3600.0


def max_events_per_hour(latency_s: float) -> float:
    """Largest sustainable event rate: events cannot overlap (``inf`` for zero latency)."""
    if latency_s < 0:
        raise CostConfigError(f"latency_s must be >= 0, got {latency_s}")
    return math.inf if latency_s == 0 else HOUR_S / latency_s


def average_power_w(
    *, energy_per_event_j: float, latency_s: float, events_per_hour: float, sleep_w: float
) -> float:
    """Mean power: events at ``events_per_hour`` (capped at the sustainable rate), asleep between.

    P = E_event x R / 3600 + P_sleep x (1 - R x latency / 3600).
    """
    if events_per_hour < 0 or energy_per_event_j < 0 or sleep_w < 0:
        raise CostConfigError("energy, event rate and sleep power must be >= 0")
    rate = min(events_per_hour, max_events_per_hour(latency_s))
    busy = min(1.0, rate * latency_s / HOUR_S)
    return energy_per_event_j * rate / HOUR_S + sleep_w * (1.0 - busy)


def lifetime_hours(remaining_j: float, power_w: float) -> float:
    """Hours until ``remaining_j`` is spent at ``power_w`` (0 when empty, inf at zero power)."""
    if remaining_j <= 0:
        return 0.0
    return math.inf if power_w <= 0 else remaining_j / power_w / HOUR_S


@dataclass(frozen=True, slots=True)
class Duty:
    """A node that learns ``events_per_hour`` events of one cost, asleep in between.

    ``lifetime_h`` is for a battery holding ``battery_j`` (inf at zero power); a rate above
    ``max_events_per_hour`` is not ``sustainable`` and is costed at that maximum.
    """

    events_per_hour: float
    power_w: float
    lifetime_h: float
    max_events_per_hour: float

    @property
    def sustainable(self) -> bool:
        return self.events_per_hour <= self.max_events_per_hour

    @classmethod
    def of(
        cls,
        *,
        energy_per_event_j: float,
        latency_s: float,
        events_per_hour: float,
        sleep_w: float,
        battery_j: float,
    ) -> Duty:
        power = average_power_w(
            energy_per_event_j=energy_per_event_j,
            latency_s=latency_s,
            events_per_hour=events_per_hour,
            sleep_w=sleep_w,
        )
        return cls(
            events_per_hour=events_per_hour,
            power_w=power,
            lifetime_h=lifetime_hours(battery_j, power),
            max_events_per_hour=max_events_per_hour(latency_s),
        )


@dataclass(slots=True)
class LifetimeEstimator:
    """Observed event rate and mean event cost over simulated time, for the lifetime projection.

    Until two events at distinct times are seen, the rate is ``nominal_events_per_hour``; until one
    event is seen, the event cost is ``nominal_energy_j`` / ``nominal_latency_s`` (the analytical
    cost with a full memory).
    """

    nominal_events_per_hour: float
    nominal_energy_j: float = 0.0
    nominal_latency_s: float = 0.0
    events: int = 0
    first_t: float = 0.0
    last_t: float = 0.0
    energy_sum_j: float = 0.0
    latency_sum_s: float = 0.0

    def __post_init__(self) -> None:
        for name in _fields():
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0) and name not in ("first_t", "last_t"):
                raise BatteryStateError(f"{name} must be finite and >= 0, got {value!r}")
        if self.nominal_events_per_hour <= 0:
            raise BatteryStateError("nominal_events_per_hour must be > 0")

    def observe(self, t: float, energy_j: float, latency_s: float) -> None:
        """Record one event at simulated time ``t`` (seconds) that cost ``energy_j``."""
        if energy_j < 0 or latency_s < 0:
            raise BatteryStateError("energy_j and latency_s must be >= 0")
        if self.events == 0:
            self.first_t = t
        elif t < self.last_t:
            raise BatteryStateError(f"event time {t} is before the last event ({self.last_t})")
        self.last_t = t
        self.events += 1
        self.energy_sum_j += energy_j
        self.latency_sum_s += latency_s

    @property
    def events_per_hour(self) -> float:
        span = self.last_t - self.first_t
        if self.events < 2 or span <= 0:
            return self.nominal_events_per_hour
        return (self.events - 1) * HOUR_S / span

    @property
    def energy_per_event_j(self) -> float:
        return self.energy_sum_j / self.events if self.events else self.nominal_energy_j

    @property
    def latency_per_event_s(self) -> float:
        return self.latency_sum_s / self.events if self.events else self.nominal_latency_s

    def power_w(self, sleep_w: float) -> float:
        return average_power_w(
            energy_per_event_j=self.energy_per_event_j,
            latency_s=self.latency_per_event_s,
            events_per_hour=self.events_per_hour,
            sleep_w=sleep_w,
        )

    def lifetime_h(self, battery: Battery) -> float:
        """Projected remaining hours of ``battery``; 0 when it is depleted."""
        if battery.depleted:
            return 0.0
        return lifetime_hours(battery.remaining_j, self.power_w(battery.sleep_w))

    def to_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in _fields()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LifetimeEstimator:
        missing = [name for name in _fields() if name not in data]
        if missing:
            raise BatteryStateError(f"lifetime state is missing {missing}")
        values = {name: data[name] for name in _fields()}
        if any(isinstance(v, bool) or not isinstance(v, int | float) for v in values.values()):
            raise BatteryStateError("lifetime state values must be numbers")
        values["events"] = int(values["events"])
        return cls(**values)


def _fields() -> tuple[str, ...]:
    return tuple(field.name for field in fields(LifetimeEstimator))


__all__ = [
    "HOUR_S",
    "Duty",
    "LifetimeEstimator",
    "average_power_w",
    "lifetime_hours",
    "max_events_per_hour",
]
