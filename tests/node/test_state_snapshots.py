"""The typed parts of NodeState: snapshots of the working battery and lifetime estimator, energy
totals, and their round trip through a real state file."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.energy import Battery, LifetimeEstimator
from device.learning.inference import InferenceCounters
from device.node.store import NodeState, NodeStore, StoreCorruptError
from device.node.store.snapshots import (
    ENERGY_STAGES,
    BatterySnapshot,
    EnergyTotals,
    LifetimeSnapshot,
)

joules = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)
times = st.floats(min_value=-1e10, max_value=1e10, allow_nan=False)
counts = st.integers(min_value=0, max_value=2**40)


def test_snapshots_have_the_fields_of_the_working_objects() -> None:
    assert [f.name for f in fields(BatterySnapshot)] == [f.name for f in fields(Battery)]
    assert [f.name for f in fields(LifetimeSnapshot)] == [f.name for f in fields(LifetimeEstimator)]
    assert [f.name for f in fields(EnergyTotals)] == [f"{s}_j" for s in ENERGY_STAGES]


@given(capacity=st.floats(1e-3, 1e6), draws=st.lists(joules, max_size=5), sleep_w=joules)
def test_a_battery_snapshot_restores_the_same_battery(
    capacity: float, draws: list[float], sleep_w: float
) -> None:
    battery = Battery(capacity_j=capacity, remaining_j=capacity, sleep_w=sleep_w)
    for joule in draws:
        battery.draw(joule)
    snapshot = BatterySnapshot.of(battery)
    assert snapshot.restore() == battery
    assert snapshot.restore() is not battery  # a new working copy: drawing it changes no snapshot
    snapshot.restore().draw(battery.remaining_j)
    assert snapshot == BatterySnapshot.of(battery)


@given(observed=st.lists(st.tuples(st.booleans(), st.floats(0, 1e4), joules, joules), max_size=6))
def test_a_lifetime_snapshot_restores_the_same_estimator(
    observed: list[tuple[bool, float, float, float]],
) -> None:
    lifetime = LifetimeEstimator(nominal_events_per_hour=60.0, nominal_energy_j=0.1)
    t = 1.7e9
    for inference, step, energy_j, latency_s in observed:
        t += step
        if inference:
            lifetime.observe_inference(t, energy_j, latency_s)
        else:
            lifetime.observe(t, energy_j, latency_s)
    assert LifetimeSnapshot.of(lifetime).restore() == lifetime


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: BatterySnapshot(1.0, 2.0, 0.0, 0.0), "exceeds capacity_j"),
        (lambda: BatterySnapshot(0.0, 0.0, 0.0, 0.0), "capacity_j must be > 0"),
        (lambda: BatterySnapshot(1.0, float("nan"), 0.0, 0.0), "remaining_j"),
        (lambda: BatterySnapshot(1.0, 1.0, -1.0, 0.0), "sleep_w must be >= 0"),
        (lambda: LifetimeSnapshot(0.0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), "nominal_events"),
        (lambda: LifetimeSnapshot(60, 0, 0, True, 0, 0, 0, 0, 0, 0, 0, 0, 0), "events"),
        (lambda: LifetimeSnapshot(60, 0, 0, 0, float("inf"), 0, 0, 0, 0, 0, 0, 0, 0), "first_t"),
        (lambda: EnergyTotals(idle_j=-1.0), "idle_j"),
    ],
)
def test_snapshots_are_checked(build: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()


def test_energy_totals_add_by_stage() -> None:
    totals = EnergyTotals(frozen_j=1.0, total_j=1.0)
    after = totals.plus({"frozen": 0.5, "idle": 0.25, "total": 0.75})
    assert after == EnergyTotals(frozen_j=1.5, idle_j=0.25, total_j=1.75)
    assert after.by_stage() == {
        "frozen": 1.5,
        "adaptive": 0.0,
        "memory": 0.0,
        "idle": 0.25,
        "total": 1.75,
    }
    with pytest.raises(ValueError, match=r"\['radio'\]"):
        totals.plus({"radio": 1.0})


batteries = st.builds(
    lambda capacity, share, sleep_w: BatterySnapshot(
        capacity, capacity * share, sleep_w, capacity * (1 - share)
    ),
    st.floats(1e-3, 1e6),
    st.floats(0.0, 1.0),
    joules,
)
lifetimes = st.builds(
    LifetimeSnapshot,
    st.floats(1e-3, 1e4),
    joules,
    joules,
    counts,
    times,
    times,
    joules,
    joules,
    counts,
    times,
    times,
    joules,
    joules,
)
states = st.builds(
    NodeState,
    last_seq=st.none() | counts,
    events_applied=counts,
    sim_time=st.none() | times,
    gaps=counts,
    battery=st.none() | batteries,
    lifetime=st.none() | lifetimes,
    energy_totals=st.builds(EnergyTotals, joules, joules, joules, joules, joules),
    last_latency_s=joules,
    inference=st.builds(
        lambda count, energy_j, right, wrong: InferenceCounters(
            count=count, energy_j=energy_j, preq_right=right, preq_n=right + wrong
        ),
        counts,
        joules,
        counts,
        counts,
    ),
)


@settings(max_examples=50, deadline=None)
@given(first=states, second=states)
def test_any_state_reads_back_as_written(
    tmp_path_factory: pytest.TempPathFactory, first: NodeState, second: NodeState
) -> None:
    """Written in one transaction, read back equal; a later state replaces it whole (a part
    that goes back to None leaves no row behind)."""
    state_dir = tmp_path_factory.mktemp("state")
    with NodeStore.open(state_dir, "n0", "m") as store:
        for state in (first, second):
            with store.event_transaction() as tx:
                tx.set_state(state)
            assert store.state() == state
    with NodeStore.open(state_dir, "n0", "m") as again:
        assert again.state() == second


def test_a_bad_value_in_a_typed_table_is_a_corrupt_file(tmp_path: Path) -> None:
    with NodeStore.open(tmp_path, "n0", "m") as store:
        with store.event_transaction() as tx:
            tx.set_state(NodeState(battery=BatterySnapshot(10.0, 5.0, 0.0, 5.0)))
        store.db.execute("UPDATE battery SET remaining_j = 11.0")
        store.db.conn.commit()
        with pytest.raises(StoreCorruptError, match=r"BatterySnapshot.*exceeds capacity_j"):
            store.state()
        store.db.execute("DELETE FROM battery")  # a battery not saved yet: that is fine
        store.db.execute("DELETE FROM energy_totals")  # totals always have their row
        store.db.conn.commit()
        with pytest.raises(StoreCorruptError, match="no energy_totals row"):
            store.state()
