"""Scenario invariants: coverage, no test sample in training, determinism, per-device orders."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from dataset_stream import ScenarioError, build_scenario, factory_split
from dataset_stream.scenarios import Scenario
from dataset_stream.sources import load_source, write_core50_sample


def training_rows(s: Scenario, device: str = "node-0000") -> np.ndarray:
    return np.concatenate([s.factory_indices, *(e.indices for e in s.events(device))])


@pytest.mark.parametrize("name", ["nic", "nc", "ni"])
@pytest.mark.parametrize("dataset", ["digits", "synthetic-sensor"])
def test_every_training_sample_is_used_once_and_no_test_sample_ever(
    dataset: str, name: str
) -> None:
    s = build_scenario(dataset, name, seed=3)
    d = s.dataset
    rows = training_rows(s)
    assert len(np.unique(rows)) == len(rows)  # nothing twice
    np.testing.assert_array_equal(np.sort(rows), d.select(sessions=d.train_sessions))
    assert not np.isin(d.session[rows], d.test_sessions).any()
    assert np.isin(d.session[s.eval_indices], d.test_sessions).all()
    # not even a differently rendered copy of a test image is used for training
    assert not np.isin(d.origin[rows], d.origin[s.eval_indices]).any()
    assert set(d.y[s.eval_indices]) == set(range(len(d.classes)))


def test_nic_digits_shape_of_the_stream() -> None:
    s = build_scenario("digits", "nic", seed=0)
    fx, fy = s.factory
    assert fx.shape[1:] == (1, 32, 32) and fx.dtype == np.uint8 and fy.dtype == np.int64
    factory_classes = set(fy.tolist())
    assert len(factory_classes) == 3
    assert len(set(s.dataset.session[s.factory_indices])) == 1
    events = s.events("node-0000")
    assert len(events) == s.num_events == 8 * 10 - 3
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    for event in events:
        assert len(event.classes) == 1 and event.session is not None
        assert 100 < len(event) < 200
        x = event.x
        assert x.shape == (len(event), 1, 32, 32) and x.dtype == np.uint8
        np.testing.assert_array_equal(event.y, s.dataset.y[event.indices])
    # class and session coverage: every (class, training session) unit appears exactly once
    units = {(e.classes[0], e.session) for e in events}
    units |= {(c, s.dataset.session[s.factory_indices[0]]) for c in factory_classes}
    assert units == {(c, t) for c in range(10) for t in s.dataset.train_sessions}
    # new classes keep arriving after the factory batch
    assert {e.classes[0] for e in events} == set(range(10))


def test_nc_and_ni_events() -> None:
    nc = build_scenario("digits", "nc", seed=1)
    factory = set(nc.factory[1].tolist())
    seen = [set(e.classes) for e in nc.events("a")]
    assert all(len(c) == 1 and not c & factory for c in seen)
    assert set().union(*seen) | factory == set(range(10))
    ni = build_scenario("digits", "ni", seed=1)
    assert set(ni.factory[1].tolist()) == set(range(10))
    sessions = [e.session for e in ni.events("a")]
    assert len(set(sessions)) == len(sessions) == 7
    assert all(set(e.classes) == set(range(10)) for e in ni.events("a"))


def test_same_seed_same_stream_and_per_device_orders() -> None:
    a = build_scenario("digits", "nic", seed=7)
    b = build_scenario("digits", "nic", seed=7)
    np.testing.assert_array_equal(a.factory_indices, b.factory_indices)
    for device in ("node-0000", "node-0001"):
        ea, eb = a.events(device), b.events(device)
        assert all(np.array_equal(x.indices, y.indices) for x, y in zip(ea, eb, strict=True))
    own = [[e.classes + e.sessions for e in a.events(d)] for d in ("node-0000", "node-0001")]
    assert own[0] != own[1]  # each device its own order ...
    assert sorted(own[0]) == sorted(own[1])  # ... of the same events
    same = [[e.classes + e.sessions for e in a.events(d, same_order=True)] for d in ("x", "y")]
    assert same[0] == same[1]


def test_factory_depends_on_the_seed_only() -> None:
    fx, fy = factory_split("digits", "nic", seed=2)
    again_x, again_y = build_scenario("digits", "nic", seed=2).factory
    np.testing.assert_array_equal(fx, again_x)
    np.testing.assert_array_equal(fy, again_y)
    other = build_scenario("digits", "nic", seed=3)
    assert not np.array_equal(other.factory_indices, build_scenario(seed=2).factory_indices)


def test_large_units_are_chunked_within_limits() -> None:
    s = build_scenario("digits", "nc", seed=0, max_event_samples=500)
    events = s.events("node-0000")
    assert all(len(e) <= 500 for e in events)
    assert len(events) > 7
    # the chunks of one class arrive one after the other
    order = [e.classes[0] for e in events]
    changes = sum(1 for p, q in itertools.pairwise(order) if p != q)
    assert changes == len(set(order)) - 1


def test_eval_set_is_capped_and_stratified() -> None:
    s = build_scenario("digits", "nic", eval_max_bytes=200 * 1032)
    assert 180 <= len(s.eval_indices) <= 220
    counts = np.bincount(s.dataset.y[s.eval_indices], minlength=10)
    assert counts.min() >= 15


def test_core50_scenario_reads_images_lazily(tmp_path: Path) -> None:
    root = write_core50_sample(tmp_path / "core50", objects=(1, 2, 3, 4, 5, 6), frames=2)
    s = build_scenario(load_source(f"core50:{root}"), "nic", seed=0)
    assert s.sample_shape == (3, 8, 8)
    assert len(s.factory[1]) == 2 * 2  # 30% of 6 objects, one session, 2 frames each
    events = s.events("node-0003")
    assert len(events) == 6 * 8 - 2
    assert events[0].x.shape == (2, 3, 8, 8)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scenario": "cl"}, "unknown scenario"),
        ({"factory_classes": 10}, "leaves no new class"),
        ({"scenario": "ni", "factory_sessions": 8}, "leaves no new session"),
        ({"max_event_samples": 0}, ">= 1"),
    ],
)
def test_bad_scenarios(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ScenarioError, match=match):
        build_scenario("digits", **kwargs)  # type: ignore[arg-type]


def test_user_data_with_a_single_training_session(tmp_path: Path) -> None:
    x = np.arange(200, dtype=np.float32).reshape(100, 2)
    np.savez(tmp_path / "d.npz", x=x, y=np.repeat(np.arange(5), 20))
    data = load_source(f"npz:{tmp_path / 'd.npz'}")
    nic = build_scenario(data, "nic")
    assert nic.num_events == 5 - 2  # the other classes, one event each
    assert len(build_scenario(data, "nc").events("a")) == 3
    with pytest.raises(ScenarioError, match="no new session"):
        build_scenario(data, "ni")


def test_events_validate_the_device_id() -> None:
    with pytest.raises(ValueError, match="device id"):
        build_scenario().events("a/b")
