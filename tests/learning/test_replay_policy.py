"""AR1* placement (pure): quotas, fill phase, class balance, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

from device.learning.replay import SlotPlacement, ar1_quota, plan_placement


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_quota_follows_ar1() -> None:
    assert [ar1_quota(1500, i, 300) for i in range(8)] == [300, 300, 300, 300, 300, 250, 214, 187]
    assert ar1_quota(0, 0, 300) == 0
    assert ar1_quota(100, 0, 0) == 0
    with pytest.raises(ValueError, match="lr_size"):
        ar1_quota(-1, 0, 1)


def test_full_memory_replaces_exactly_h_distinct_slots() -> None:
    labels = np.arange(100) % 7
    for i in range(6):
        p = plan_placement(
            lr_size=100, events_before=i, slot_labels=labels, new_labels=np.zeros(40), rng=rng(i)
        )
        h = min(100 // (i + 1), 40)
        assert len(p) == h
        assert len(np.unique(p.slots)) == h and (p.slots < 100).all()
        assert len(np.unique(p.new_index)) == h and (p.new_index < 40).all()


def test_fill_phase_stores_everything_until_full() -> None:
    # 10 latents at first, then 1000 per event: AR1* alone would store only 50 at event 1.
    p0 = plan_placement(
        lr_size=100, events_before=0, slot_labels=[], new_labels=np.zeros(10), rng=rng()
    )
    assert p0.slots.tolist() == list(range(10))
    p1 = plan_placement(
        lr_size=100, events_before=1, slot_labels=np.zeros(10), new_labels=np.ones(1000), rng=rng()
    )
    assert p1.slots.tolist() == list(range(10, 100))  # full right away, no replacement needed


def test_quota_beyond_free_slots_replaces_the_rest() -> None:
    p = plan_placement(
        lr_size=100, events_before=0, slot_labels=np.zeros(90), new_labels=np.ones(60), rng=rng()
    )
    assert len(p) == 60
    assert sorted(p.slots[:10]) == list(range(90, 100))
    assert (p.slots[10:] < 90).all()


def test_same_generator_state_same_placement() -> None:
    def plan(seed: int) -> SlotPlacement:
        return plan_placement(
            lr_size=50,
            events_before=3,
            slot_labels=np.arange(50) % 5,
            new_labels=np.arange(30) % 3,
            rng=rng(seed),
            class_balanced=True,
        )

    a, b = plan(7), plan(7)
    np.testing.assert_array_equal(a.slots, b.slots)
    np.testing.assert_array_equal(a.new_index, b.new_index)


def test_lr_size_zero_places_nothing() -> None:
    p = plan_placement(
        lr_size=0, events_before=0, slot_labels=[], new_labels=np.zeros(5), rng=rng()
    )
    assert len(p) == 0


def apply(labels: np.ndarray, p: SlotPlacement, new_labels: np.ndarray, lr_size: int) -> np.ndarray:
    out = np.full(lr_size, -1)
    out[: len(labels)] = labels
    out[p.slots] = new_labels[p.new_index]
    return out[out >= 0]


def test_class_balanced_new_class_per_event_keeps_counts_within_one() -> None:
    lr_size, labels = 120, np.empty(0, dtype=np.int64)
    for event in range(8):  # NIC-like: every event brings one new class
        new = np.full(200, event)
        p = plan_placement(
            lr_size=lr_size,
            events_before=event,
            slot_labels=labels,
            new_labels=new,
            rng=rng(event),
            class_balanced=True,
        )
        labels = apply(labels, p, new, lr_size)
        counts = np.bincount(labels, minlength=event + 1)
        assert len(labels) == lr_size
        assert counts.max() - counts.min() <= 1, (event, counts)


def test_random_mode_does_not_promise_balance() -> None:
    lr_size, labels = 120, np.empty(0, dtype=np.int64)
    spreads = []
    for event in range(8):
        new = np.full(200, event)
        p = plan_placement(
            lr_size=lr_size,
            events_before=event,
            slot_labels=labels,
            new_labels=new,
            rng=rng(event),
        )
        labels = apply(labels, p, new, lr_size)
        counts = np.bincount(labels, minlength=event + 1)
        spreads.append(int(counts.max() - counts.min()))
    assert max(spreads) > 1  # the reason class-balanced mode exists


def test_class_balanced_picks_rare_new_classes_first() -> None:
    # memory: 90 of class 0, 10 of class 1; the event brings 50 of class 0 and 50 of class 1
    p = plan_placement(
        lr_size=100,
        events_before=1,
        slot_labels=np.repeat([0, 1], [90, 10]),
        new_labels=np.repeat([0, 1], 50),
        rng=rng(),
        class_balanced=True,
    )
    labels = apply(np.repeat([0, 1], [90, 10]), p, np.repeat([0, 1], 50), 100)
    assert np.bincount(labels).tolist() == [50, 50]
