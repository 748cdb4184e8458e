"""Projected remaining lifetime from the energy left and the average power at an event rate."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from device.energy.battery import Battery
from device.energy.errors import BatteryStateError, CostConfigError

if TYPE_CHECKING:
    from device.energy.cost import EventCost, InferenceCost
    from device.energy.profile import Profile

HOUR_S = 3600.0


def _check(**values: float) -> None:
    for name, value in values.items():
        if not (math.isfinite(value) and value >= 0):
            raise CostConfigError(f"{name} must be finite and >= 0, got {value!r}")


def max_events_per_hour(latency_s: float, *, inference_busy: float = 0.0) -> float:
    """Largest sustainable event rate: events overlap neither each other nor the inferences,
    which keep the device busy ``inference_busy`` of the time (``inf`` for zero latency)."""
    _check(latency_s=latency_s, inference_busy=inference_busy)
    if latency_s == 0:
        return math.inf
    return max(0.0, 1.0 - inference_busy) * HOUR_S / latency_s


@dataclass(frozen=True, slots=True)
class _Load:
    """The rates a device actually runs and the fraction of time it is busy (at most 1)."""

    events_per_hour: float
    inference_per_s: float
    busy: float


def _load(
    events_per_hour: float, latency_s: float, inference_per_s: float, inference_latency_s: float
) -> _Load:
    """Asked rates, or when they need more than all the time (busy > 1), both scaled down in
    the same proportion so that the device is busy all the time (with no inference: the event
    rate capped at :func:`max_events_per_hour`)."""
    event_busy = events_per_hour * latency_s / HOUR_S
    inference_busy = inference_per_s * inference_latency_s
    asked = event_busy + inference_busy
    if asked > 1.0:
        if latency_s > 0:
            events_per_hour = event_busy / asked * HOUR_S / latency_s
        if inference_latency_s > 0:
            inference_per_s = inference_busy / asked / inference_latency_s
    busy = events_per_hour * latency_s / HOUR_S + inference_per_s * inference_latency_s
    return _Load(events_per_hour, inference_per_s, min(1.0, busy))


def average_power_w(
    *,
    energy_per_event_j: float,
    latency_s: float,
    events_per_hour: float,
    sleep_w: float,
    inference_per_s: float = 0.0,
    energy_per_inference_j: float = 0.0,
    latency_per_inference_s: float = 0.0,
) -> float:
    """Mean power: events at ``events_per_hour`` and inferences at ``inference_per_s``, asleep
    in between (rates that need more than all the time are scaled down, see :class:`Duty`).

    P = E_event x R / 3600 + E_inf x r + P_sleep x (1 - busy),
    busy = min(1, R x latency / 3600 + r x latency_inf).
    """
    return Duty.of(
        energy_per_event_j=energy_per_event_j,
        latency_s=latency_s,
        events_per_hour=events_per_hour,
        sleep_w=sleep_w,
        battery_j=0.0,
        inference_per_s=inference_per_s,
        energy_per_inference_j=energy_per_inference_j,
        latency_per_inference_s=latency_per_inference_s,
    ).power_w


def lifetime_hours(remaining_j: float, power_w: float) -> float:
    """Hours until ``remaining_j`` is spent at ``power_w`` (0 when empty, inf at zero power)."""
    if remaining_j <= 0:
        return 0.0
    return math.inf if power_w <= 0 else remaining_j / power_w / HOUR_S


@dataclass(frozen=True, slots=True)
class Duty:
    """A node that learns ``events_per_hour`` events and classifies ``inference_per_s`` samples
    per second, each of one cost, asleep in between.

    P = E_event x R / 3600 + E_inf x r + P_sleep x (1 - busy), with
    busy = R x latency / 3600 + r x latency_inf. A duty with busy > 1 is not ``sustainable``: it
    is costed with both rates scaled down in the same proportion until busy = 1 (without
    inference, the event rate capped at ``max_events_per_hour``). ``max_events_per_hour`` is
    the largest event rate that fits beside the inference duty. ``lifetime_h`` is for a battery
    holding ``battery_j`` (inf at zero power). ``inference_power_w`` is the part of
    ``power_w`` spent classifying.
    """

    events_per_hour: float
    power_w: float
    lifetime_h: float
    max_events_per_hour: float
    inference_per_s: float = 0.0
    inference_power_w: float = 0.0
    inference_busy: float = 0.0  # fraction of the time the asked inferences need

    @property
    def sustainable(self) -> bool:
        """Whether the asked rates fit in the time there is (busy <= 1)."""
        return self.events_per_hour <= self.max_events_per_hour and self.inference_busy <= 1.0

    @classmethod
    def of(
        cls,
        *,
        energy_per_event_j: float,
        latency_s: float,
        events_per_hour: float,
        sleep_w: float,
        battery_j: float,
        inference_per_s: float = 0.0,
        energy_per_inference_j: float = 0.0,
        latency_per_inference_s: float = 0.0,
    ) -> Duty:
        """The duty's power and lifetime; a negative or non-finite input is a
        :class:`CostConfigError` that names it."""
        _check(
            energy_per_event_j=energy_per_event_j,
            latency_s=latency_s,
            events_per_hour=events_per_hour,
            sleep_w=sleep_w,
            inference_per_s=inference_per_s,
            energy_per_inference_j=energy_per_inference_j,
            latency_per_inference_s=latency_per_inference_s,
        )
        load = _load(events_per_hour, latency_s, inference_per_s, latency_per_inference_s)
        inference_w = energy_per_inference_j * load.inference_per_s
        power = energy_per_event_j * load.events_per_hour / HOUR_S + inference_w
        power += sleep_w * (1.0 - load.busy)
        inference_busy = inference_per_s * latency_per_inference_s
        return cls(
            events_per_hour=events_per_hour,
            power_w=power,
            lifetime_h=lifetime_hours(battery_j, power),
            max_events_per_hour=max_events_per_hour(latency_s, inference_busy=inference_busy),
            inference_per_s=inference_per_s,
            inference_power_w=inference_w,
            inference_busy=inference_busy,
        )

    @classmethod
    def of_costs(
        cls,
        event: EventCost,
        inference: InferenceCost,
        profile: Profile,
        *,
        events_per_hour: float,
        inference_per_s: float = 0.0,
    ) -> Duty:
        """:meth:`of` for ``event`` (one learning event) and ``inference`` (of any number of
        samples: its per-sample cost is used) on a full battery of ``profile``."""
        one = inference.per_sample() if inference.n_samples != 1 else inference
        return cls.of(
            energy_per_event_j=event.energy_j["total"],
            latency_s=event.latency_s["total"],
            events_per_hour=events_per_hour,
            sleep_w=profile.sleep_w,
            battery_j=profile.battery_j,
            inference_per_s=inference_per_s,
            energy_per_inference_j=one.energy_j["total"],
            latency_per_inference_s=one.latency_s["total"],
        )


@dataclass(slots=True)
class LifetimeEstimator:
    """Observed event and inference rates and mean costs over simulated time, for the lifetime
    projection.

    Until two events at distinct times are seen, the event rate is ``nominal_events_per_hour``;
    until one event is seen, the event cost is ``nominal_energy_j`` / ``nominal_latency_s`` (the
    analytical cost with a full memory). Inferences (:meth:`observe_inference`, one call per
    inference message, whatever its number of samples) count from two calls at distinct times
    on; before that they add nothing. The projected power is :class:`Duty`'s with both rates.
    """

    nominal_events_per_hour: float
    nominal_energy_j: float = 0.0
    nominal_latency_s: float = 0.0
    events: int = 0
    first_t: float = 0.0
    last_t: float = 0.0
    energy_sum_j: float = 0.0
    latency_sum_s: float = 0.0
    inferences: int = 0  # inference calls observed
    inference_first_t: float = 0.0
    inference_last_t: float = 0.0
    inference_energy_sum_j: float = 0.0
    inference_latency_sum_s: float = 0.0

    def __post_init__(self) -> None:
        for name in _fields():
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0) and name not in _TIMES:
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

    def observe_inference(self, t: float, energy_j: float, latency_s: float) -> None:
        """Record one inference call at simulated time ``t`` (seconds) that cost ``energy_j``
        and ``latency_s`` in all (e.g. ``inference_cost(...).energy_j["total"]`` for all the
        samples of one message; active energy only, as for :meth:`observe`).

        From then on :meth:`power_w` and :meth:`lifetime_h` include inference: calls at the
        observed rate ((calls - 1) / (last t - first t)) at their mean cost. ``t`` must not go
        back before the last call (:class:`BatteryStateError`); clamp a producer's clock first.
        """
        if not (math.isfinite(energy_j) and energy_j >= 0):
            raise BatteryStateError(f"energy_j must be finite and >= 0, got {energy_j!r}")
        if not (math.isfinite(latency_s) and latency_s >= 0):
            raise BatteryStateError(f"latency_s must be finite and >= 0, got {latency_s!r}")
        if not math.isfinite(t):
            raise BatteryStateError(f"inference time must be finite, got {t!r}")
        if self.inferences == 0:
            self.inference_first_t = t
        elif t < self.inference_last_t:
            raise BatteryStateError(
                f"inference time {t} is before the last inference ({self.inference_last_t})"
            )
        self.inference_last_t = t
        self.inferences += 1
        self.inference_energy_sum_j += energy_j
        self.inference_latency_sum_s += latency_s

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

    @property
    def inference_calls_per_s(self) -> float:
        """Observed inference calls per second (0 before two calls at distinct times)."""
        span = self.inference_last_t - self.inference_first_t
        return (self.inferences - 1) / span if self.inferences >= 2 and span > 0 else 0.0

    @property
    def energy_per_inference_j(self) -> float:
        """Mean energy of one inference call (0 before the first)."""
        return self.inference_energy_sum_j / self.inferences if self.inferences else 0.0

    @property
    def latency_per_inference_s(self) -> float:
        """Mean latency of one inference call (0 before the first)."""
        return self.inference_latency_sum_s / self.inferences if self.inferences else 0.0

    def duty(self, battery: Battery) -> Duty:
        """The observed duty (event and inference rates at their mean costs) on ``battery``."""
        return self._duty(battery.sleep_w, battery.remaining_j)

    def power_w(self, sleep_w: float) -> float:
        return self._duty(sleep_w, 0.0).power_w

    def _duty(self, sleep_w: float, battery_j: float) -> Duty:
        return Duty.of(
            energy_per_event_j=self.energy_per_event_j,
            latency_s=self.latency_per_event_s,
            events_per_hour=self.events_per_hour,
            sleep_w=sleep_w,
            battery_j=battery_j,
            inference_per_s=self.inference_calls_per_s,
            energy_per_inference_j=self.energy_per_inference_j,
            latency_per_inference_s=self.latency_per_inference_s,
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
        """Restore :meth:`to_dict`; a state saved before inference was modelled (no
        ``inference*`` keys) restores with no inference observed."""
        missing = [name for name in _fields() if name not in data and name not in _ADDED]
        if missing:
            raise BatteryStateError(f"lifetime state is missing {missing}")
        values = {name: data[name] for name in _fields() if name in data}
        if any(isinstance(v, bool) or not isinstance(v, int | float) for v in values.values()):
            raise BatteryStateError("lifetime state values must be numbers")
        for count in ("events", "inferences"):
            if count in values:
                values[count] = int(values[count])
        return cls(**values)


def _fields() -> tuple[str, ...]:
    return tuple(field.name for field in fields(LifetimeEstimator))


_TIMES = ("first_t", "last_t", "inference_first_t", "inference_last_t")
_ADDED = frozenset(name for name in _fields() if name.startswith("inference"))


__all__ = [
    "HOUR_S",
    "Duty",
    "LifetimeEstimator",
    "average_power_w",
    "lifetime_hours",
    "max_events_per_hour",
]
