"""Endless scenarios: events 1..K are the finite scenario's, later ones a pure function of
(data set, scenario, seed, options, device, k); no test sample is ever generated; the drift and
recurrence schedules do what docs/datasets.md says."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dataset_stream import build_scenario
from dataset_stream.continuation import ENDLESS_EVENTS, plan_seqs
from dataset_stream.endless import (
    Drift,
    DriftKind,
    EndlessOptions,
    EndlessScenario,
    GeneratedEvent,
    Recurrence,
    build_endless,
)
from dataset_stream.endless.looks import ImageLook, SignalLook
from dataset_stream.scenarios import Event

DEVICE = "node-0003"


@pytest.fixture(scope="module")
def digits() -> EndlessScenario:
    return build_endless("digits", "nic", seed=0)


def same_event(a: Event, b: Event) -> None:
    assert (a.seq, a.classes, a.sessions) == (b.seq, b.classes, b.sessions)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.x, b.x)


def test_the_first_k_events_are_the_finite_scenarios(digits: EndlessScenario) -> None:
    finite = build_scenario("digits", "nic", seed=0)
    assert digits.finite_events == finite.num_events == 77
    for same_order in (False, True):
        events = digits.events(DEVICE, same_order)
        for got, want in zip(events[:77], finite.events(DEVICE, same_order), strict=True):
            assert not isinstance(got, GeneratedEvent)
            same_event(got, want)
        assert isinstance(events[77], GeneratedEvent) and events[77].seq == 78
    np.testing.assert_array_equal(digits.factory[1], finite.factory[1])
    np.testing.assert_array_equal(digits.eval_set[1], finite.eval_set[1])


@pytest.mark.parametrize("k", [1, 40, 77, 78, 79, 160, 500, 1234])
def test_event_k_on_its_own_is_event_k_of_a_full_run(k: int) -> None:
    options = EndlessOptions(drift=Drift(DriftKind.gradual, period_events=50))
    full = build_endless("digits", "nic", seed=2, options=options)
    run = list(itertools.islice(full.events(DEVICE), k))  # every event up to k, in order
    alone = build_endless("digits", "nic", seed=2, options=options)  # another stream's
    same_event(alone.event(DEVICE, k), run[k - 1])
    same_event(alone.events(DEVICE)[k - 1], run[k - 1])


def test_devices_differ_unless_same_order_and_seeds_differ(digits: EndlessScenario) -> None:
    k = 300
    a, b = digits.event("node-0000", k), digits.event("node-0001", k)
    assert not np.array_equal(a.indices, b.indices)
    same_event(digits.event("node-0000", k, True), digits.event("node-0001", k, True))
    other = build_endless("digits", "nic", seed=1)
    assert not np.array_equal(other.event("node-0000", k).x, a.x)


def test_a_far_event_is_made_without_walking_to_it(digits: EndlessScenario) -> None:
    far = digits.event(DEVICE, 10**12)
    assert isinstance(far, GeneratedEvent) and far.generated == 10**12 - 78
    assert far.x.shape == (len(far), 1, 32, 32) and far.x.dtype == np.uint8
    stream = digits.events(DEVICE)
    assert len(stream) == digits.num_events > 10**12
    assert stream[10**12 - 1] is stream[10**12 - 1]  # kept while in use: the same object
    with pytest.raises(IndexError):
        digits.event(DEVICE, 0)


def test_any_subset_of_a_generated_event_renders_as_the_whole(digits: EndlessScenario) -> None:
    event = digits.event(DEVICE, 90)
    x = event.x
    positions = np.array([len(event) - 1, 0, 70, 64, 63])
    np.testing.assert_array_equal(event.take(positions), x[positions])
    assert not np.array_equal(x, digits.dataset.take(event.indices))  # rendered anew


@pytest.mark.parametrize("name", ["nic", "nc", "ni"])
@pytest.mark.parametrize("dataset", ["digits", "synthetic-sensor"])
def test_no_generated_event_holds_a_test_sample(dataset: str, name: str) -> None:
    s = build_endless(dataset, name, seed=5)
    data = s.dataset
    test_origins = data.origin[data.select(sessions=data.test_sessions)]
    first = s.finite_events + 1
    for seq in range(first, first + 120):
        event = s.event(DEVICE, seq)
        assert isinstance(event, GeneratedEvent)
        assert set(event.sessions) <= set(data.train_sessions)
        assert not np.isin(data.origin[event.indices], test_origins).any()
        assert len(np.unique(event.indices)) == len(event) <= s.max_samples
    event = s.event(DEVICE, first + 3)
    assert event.x.dtype == data.dtype and event.x.shape[1:] == data.sample_shape


def test_generated_rounds_cover_every_unit_without_recurrence() -> None:
    s = build_endless("digits", "nic", options=EndlessOptions(recurrence=Recurrence(300, 0)))
    units = {(e.classes, e.sessions) for e in (s.event(DEVICE, 78 + g) for g in range(80))}
    assert len(units) == 80  # round 0: each (class, training session) once, factory's included
    assert {c for (c,), _ in units} == set(range(10))


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        # onset o = 3, period 10: a at g = 0, 3, 8, 13, 23, 33
        (DriftKind.none, [0, 0, 0, 0, 0, 0]),
        (DriftKind.gradual, [0, 0, 0.5, 1, 1, 1]),
        (DriftKind.abrupt, [0, 1, 1, 1, 1, 1]),
        (DriftKind.recurring, [0, 0, 1, 1, 0, 1]),  # floor((g + 3) / 10) mod 2
    ],
)
def test_drift_schedules_follow_their_formulas(kind: DriftKind, expected: list[float]) -> None:
    drift = Drift(kind, period_events=10)
    seed, label = next(
        (seed, label) for seed in range(200) for label in range(10) if drift.onset(seed, label) == 3
    )
    got = [drift.intensity(seed, label, g) for g in (0, 3, 8, 13, 23, 33)]
    assert got == expected
    for g in range(0, 60, 7):  # every class within 0..1, onsets spread over a period
        assert all(0.0 <= drift.intensity(0, c, g) <= 1.0 for c in range(10))
    assert {drift.onset(0, c) for c in range(10)} <= set(range(10))


def test_only_the_drifting_classes_drift_and_strength_scales_the_look() -> None:
    options = EndlessOptions(
        drift=Drift(DriftKind.abrupt, period_events=1, strength=0.5, classes=(2,)),
        recurrence=Recurrence(300, 0),
    )
    s = build_endless("digits", "nic", seed=0, options=options)
    events = [s.event(DEVICE, 78 + g) for g in range(80)]
    assert {e.drift for e in events} == {((c, 0.5 if c == 2 else 0.0),) for c in range(10)}
    with pytest.raises(ValueError, match="drift classes"):
        Drift(DriftKind.abrupt, classes=(1, 1))


def test_a_full_drift_changes_what_the_samples_look_like() -> None:
    """The same event with and without drift: the drifted images are brighter and lower in
    contrast (every class's drift adds brightness and takes contrast away), the same rows."""
    plain = build_endless("digits", "nic", seed=0)
    drifted = build_endless(
        "digits", "nic", seed=0, options=EndlessOptions(drift=Drift(DriftKind.abrupt, 1))
    )
    for seq in (80, 95, 130):
        a, b = plain.event(DEVICE, seq), drifted.event(DEVICE, seq)
        np.testing.assert_array_equal(a.indices, b.indices)
        xa, xb = a.x.astype(np.float64), b.x.astype(np.float64)
        assert np.percentile(xb, 5) > np.percentile(xa, 5) + 10  # background lifted
        assert xb.std() < xa.std()


def test_looks_move_by_the_drift_times_the_amount() -> None:
    rng = np.random.default_rng(0)
    base, drift = ImageLook.session(rng), ImageLook.drift(rng)
    half = base.moved(drift, 0.5)
    assert half.rotation_deg == pytest.approx(base.rotation_deg + 0.5 * drift.rotation_deg)
    assert half.brightness == pytest.approx(base.brightness + 0.5 * drift.brightness)
    assert base.moved(drift, 0.0) is base
    assert base.moved(drift, 40.0).contrast == 0.1  # clamped to its range
    sig, sig_drift = SignalLook.session(rng, 3, 64), SignalLook.drift(rng, 3, 64)
    moved = sig.moved(sig_drift, 1.0)
    pairs = zip(sig.gain, sig_drift.gain, strict=True)
    assert moved.gain == pytest.approx([max(0.1, a + b) for a, b in pairs])
    x = np.ones((2, 3, 64), dtype=np.float32)
    flat = SignalLook(gain=(2.0, 1.0, 1.0), offset=(0.0, 1.0, 0.0))
    out = flat.render(x, np.zeros_like(x), np.array([1.0, 3.0, 1.0]), time_axis=True)
    np.testing.assert_allclose(out[:, 0], 2.0)
    np.testing.assert_allclose(out[:, 1], 4.0)  # offset in channel standard deviations


def test_a_class_away_is_never_in_an_event_and_comes_back() -> None:
    recurrence = Recurrence(cycle_events=40, absent_events=12)
    s = build_endless("digits", "nic", seed=0, options=EndlessOptions(recurrence=recurrence))
    first = s.finite_events + 1
    away = {g: set(s.away(DEVICE, first + g)) for g in range(120)}
    seen: dict[int, list[int]] = {c: [] for c in range(10)}
    for g in range(120):
        for c in s.event(DEVICE, first + g).classes:
            assert c not in away[g]  # never sent while away
            seen[c].append(g)
    for c in range(10):
        gone = [g for g in range(120) if c in away[g]]
        assert 3 * 12 <= len(gone) <= 3 * 12 + 12  # A of every C events
        assert any(g > gone[0] + 12 for g in seen[c])  # and back after its absence
    assert all(len(a) <= 3 for a in away.values())  # about n x A / C at once
    assert s.away("node-0000", first) != s.away("node-0001", first) or s.away(
        "node-0000", first + 5
    ) != s.away("node-0001", first + 5)  # each device its own phase


def test_an_ni_event_leaves_out_the_classes_away() -> None:
    recurrence = Recurrence(cycle_events=20, absent_events=10)
    options = EndlessOptions(recurrence=recurrence)
    s = build_endless("synthetic-sensor", "ni", seed=0, options=options)
    sizes = set()
    for g in range(20):
        event = s.event(DEVICE, s.finite_events + 1 + g)
        sizes.add(len(event.classes))
        assert len(event.classes) < 6  # some class is always away
    assert sizes and max(sizes) >= 3


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="absent_events"):
        Recurrence(cycle_events=10, absent_events=6)
    with pytest.raises(ValueError, match="period_events"):
        Drift(DriftKind.gradual, period_events=0)
    with pytest.raises(ValueError, match="strength"):
        Drift(DriftKind.gradual, strength=-1)
    with pytest.raises(ValueError):
        build_endless(
            "digits", "nic", options=EndlessOptions(drift=Drift(DriftKind.abrupt, classes=(10,)))
        )


def test_a_plan_on_an_endless_scenario_never_runs_out() -> None:
    endless = {"a": ENDLESS_EVENTS, "b": ENDLESS_EVENTS}
    plan = plan_seqs({"a": 80, "b": None}, endless)
    assert not plan.refused and dict(plan.ranges) == {
        "a": (81, ENDLESS_EVENTS),
        "b": (1, ENDLESS_EVENTS),
    }
    assert plan.seqs_text() == "seqs from 1" and plan.short == {}
    capped = plan_seqs({"a": 80}, {"a": ENDLESS_EVENTS}, events=3)
    assert dict(capped.ranges) == {"a": (81, 83)} and capped.seqs_text() == "seqs 81-83"
    assert build_endless("digits", "nic").num_events == ENDLESS_EVENTS
