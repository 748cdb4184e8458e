"""Battery and lifetime: exact accounting, persistence, depletion, projection."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.energy import (
    Battery,
    BatteryStateError,
    LifetimeEstimator,
    average_power_w,
    lifetime_hours,
    load_profile,
    max_events_per_hour,
)

VEGA = load_profile("vega")


def test_capacity_from_profile() -> None:
    battery = Battery.from_profile(VEGA)
    assert battery.capacity_j == pytest.approx(3300 * 3.6 * 3.3) == 39204.0
    assert battery.soc == 1.0 and not battery.depleted
    assert battery.sleep_w == VEGA.sleep_w


@settings(max_examples=200, deadline=None)
@given(
    draws=st.lists(
        st.tuples(st.booleans(), st.floats(0, 5000, allow_nan=False, allow_infinity=False)),
        max_size=60,
    )
)
def test_battery_loses_exactly_what_was_drawn(draws: list[tuple[bool, float]]) -> None:
    battery = Battery(capacity_j=10_000.0, remaining_j=10_000.0, sleep_w=0.5)
    taken = []
    for is_sleep, amount in draws:
        before = battery.remaining_j
        got = battery.sleep(amount) if is_sleep else battery.draw(amount)
        requested = amount * 0.5 if is_sleep else amount
        assert got == pytest.approx(min(requested, before))
        assert battery.remaining_j == pytest.approx(before - got, abs=1e-9)
        taken.append(got)
        assert 0.0 <= battery.soc <= 1.0
    assert math.fsum(taken) == pytest.approx(battery.drawn_j)
    assert battery.capacity_j - battery.remaining_j == pytest.approx(battery.drawn_j, abs=1e-6)
    restored = Battery.from_dict(battery.to_dict())
    assert restored == battery


def test_depletion_and_bad_draws() -> None:
    battery = Battery(capacity_j=1.0, remaining_j=1.0, sleep_w=1e-3)
    assert battery.draw(0.75) == 0.75
    assert battery.draw(5.0) == 0.25
    assert battery.depleted and battery.remaining_j == 0.0 and battery.soc == 0.0
    assert battery.sleep(3600) == 0.0
    with pytest.raises(BatteryStateError, match="joules"):
        battery.draw(-1.0)
    with pytest.raises(BatteryStateError, match="seconds"):
        battery.sleep(math.nan)
    with pytest.raises(BatteryStateError, match="missing"):
        Battery.from_dict({"capacity_j": 1.0})
    with pytest.raises(BatteryStateError, match="exceeds"):
        Battery(capacity_j=1.0, remaining_j=2.0, sleep_w=0.0)


def test_average_power_and_lifetime() -> None:
    # 0.5 J per event of 10 s, 6 events per hour, 1 mW asleep the rest of the hour
    power = average_power_w(energy_per_event_j=0.5, latency_s=10, events_per_hour=6, sleep_w=1e-3)
    assert power == pytest.approx(0.5 * 6 / 3600 + 1e-3 * (1 - 60 / 3600))
    assert lifetime_hours(36.0, 0.01) == pytest.approx(1.0)
    assert lifetime_hours(0.0, 0.01) == 0.0
    assert max_events_per_hour(2.0) == 1800
    # a rate above the sustainable one is capped: the node never sleeps
    capped = average_power_w(energy_per_event_j=2.0, latency_s=100, events_per_hour=1e6, sleep_w=1)
    assert capped == pytest.approx(2.0 / 100)


def test_estimator_uses_nominal_then_observed_rate() -> None:
    est = LifetimeEstimator(nominal_events_per_hour=2.0, nominal_energy_j=1.0, nominal_latency_s=1)
    battery = Battery(capacity_j=3600.0, remaining_j=3600.0, sleep_w=0.0)
    assert est.events_per_hour == 2.0
    assert est.lifetime_h(battery) == pytest.approx(3600 / (2 / 3600) / 3600)
    est.observe(t=1000.0, energy_j=3.0, latency_s=1.0)
    assert est.events_per_hour == 2.0  # one event: still nominal
    assert est.energy_per_event_j == 3.0
    for i in range(1, 5):  # one event every 15 simulated minutes
        est.observe(t=1000.0 + 900 * i, energy_j=3.0, latency_s=1.0)
    assert est.events_per_hour == pytest.approx(4.0)
    assert est.lifetime_h(battery) == pytest.approx(3600 / (3.0 * 4 / 3600) / 3600)
    restored = LifetimeEstimator.from_dict(est.to_dict())
    assert restored == est
    battery.draw(battery.remaining_j)
    assert est.lifetime_h(battery) == 0.0
    with pytest.raises(BatteryStateError, match="before the last event"):
        est.observe(t=0.0, energy_j=1.0, latency_s=1.0)
