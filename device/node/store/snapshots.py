"""Typed parts of a node's saved state: its battery, lifetime estimator and energy totals.

:class:`~device.energy.Battery` and :class:`~device.energy.LifetimeEstimator` are mutable: they
change with every draw and every observation. What the node commits is a frozen snapshot of
each (:meth:`BatterySnapshot.of`), and what it works with after a restart or a rolled-back event
is rebuilt from the snapshot (:meth:`BatterySnapshot.restore`). Each snapshot is one row of its
own table of the state file (:mod:`device.node.store.schema`), column for field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import astuple, dataclass, fields
from typing import Final

from device.energy import Battery, LifetimeEstimator
from device.node.store.checks import check_float, check_int

__all__ = ["ENERGY_STAGES", "BatterySnapshot", "EnergyTotals", "LifetimeSnapshot"]

#: The stages an event's energy is split into (the keys of telemetry's ``energy_j``).
ENERGY_STAGES: Final = ("frozen", "adaptive", "memory", "idle", "total")


@dataclass(frozen=True, slots=True)
class BatterySnapshot:
    """A :class:`~device.energy.Battery` as committed: joules held, drawn, and sleep power."""

    capacity_j: float
    remaining_j: float
    sleep_w: float
    drawn_j: float

    def __post_init__(self) -> None:
        for item in fields(self):
            check_float(item.name, getattr(self, item.name), nonnegative=True)
        self.restore()  # the battery's own rules (capacity > 0, remaining <= capacity)

    @classmethod
    def of(cls, battery: Battery) -> BatterySnapshot:
        return cls(battery.capacity_j, battery.remaining_j, battery.sleep_w, battery.drawn_j)

    def restore(self) -> Battery:
        """A new working battery holding this snapshot's values."""
        return Battery(*astuple(self))


_LIFETIME_COUNTS: Final = ("events", "inferences")
_LIFETIME_TIMES: Final = ("first_t", "last_t", "inference_first_t", "inference_last_t")


@dataclass(frozen=True, slots=True)
class LifetimeSnapshot:
    """A :class:`~device.energy.LifetimeEstimator` as committed: nominal rate and costs, then
    the events and inference calls observed (count, first and last simulated time, sums)."""

    nominal_events_per_hour: float
    nominal_energy_j: float
    nominal_latency_s: float
    events: int
    first_t: float
    last_t: float
    energy_sum_j: float
    latency_sum_s: float
    inferences: int
    inference_first_t: float
    inference_last_t: float
    inference_energy_sum_j: float
    inference_latency_sum_s: float

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name in _LIFETIME_COUNTS:
                check_int(item.name, value)
            else:
                check_float(item.name, value, nonnegative=item.name not in _LIFETIME_TIMES)
        self.restore()  # the estimator's own rules (a nominal rate > 0)

    @classmethod
    def of(cls, lifetime: LifetimeEstimator) -> LifetimeSnapshot:
        return cls(*(getattr(lifetime, item.name) for item in fields(cls)))

    def restore(self) -> LifetimeEstimator:
        """A new working estimator holding this snapshot's values."""
        return LifetimeEstimator(*astuple(self))


@dataclass(frozen=True, slots=True)
class EnergyTotals:
    """Joules a node has spent since its state file was created, by stage
    (:data:`ENERGY_STAGES`)."""

    frozen_j: float = 0.0
    adaptive_j: float = 0.0
    memory_j: float = 0.0
    idle_j: float = 0.0
    total_j: float = 0.0

    def __post_init__(self) -> None:
        for item in fields(self):
            check_float(item.name, getattr(self, item.name), nonnegative=True)

    def plus(self, energy_j: Mapping[str, float]) -> EnergyTotals:
        """These totals with ``energy_j`` (joules by stage name, e.g. an event's) added."""
        unknown = sorted(set(energy_j) - set(ENERGY_STAGES))
        if unknown:
            raise ValueError(f"energy stages {unknown} are not among {ENERGY_STAGES}")
        return EnergyTotals(
            *(
                getattr(self, f"{stage}_j") + energy_j[stage]
                if stage in energy_j
                else getattr(self, f"{stage}_j")
                for stage in ENERGY_STAGES
            )
        )

    def by_stage(self) -> dict[str, float]:
        """``{stage: joules}``, the keys of telemetry's ``energy_j``."""
        return {stage: getattr(self, f"{stage}_j") for stage in ENERGY_STAGES}
