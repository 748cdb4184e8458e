"""A brown-out in the middle of a learning event leaves the node's SQLite state exactly as it was
before the event: a real :class:`NodeEngine` on a real state file, every table compared row for
row (weights and replay memory as the bytes stored), then the device restarts from that file and
learns the batch once, as if the brown-out had never happened.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dataset_stream import Scenario
from dataset_stream.protocol import Batch
from device.learning.nn import SGDConfig
from device.model.bundle import ModelBundle
from device.model.frozen import FrozenStage
from device.node.engine import NodeEngine
from device.node.errors import PowerLost
from device.node.settings import NodeSettings
from device.node.store import NodeStore
from tests.support.times import T0

DEVICE = "node-0000"
#: The tables an event writes: weights, LR memory, battery, last seq (state), the event log.
EVENT_TABLES = ("weights", "replay", "battery", "state", "events")
#: What the event log records of the wall clock (the host time an event took): not state.
HOST_TIME = "host_s"
#: Tables that say when and how a file was created, not what its device learned.
BIRTH_TABLES = ("meta", "_sqlite_migrations")

Rows = dict[str, list[tuple[Any, ...]]]


def engine(state: Path, bundle: ModelBundle) -> NodeEngine:
    settings = NodeSettings(DEVICE, state, sgd=SGDConfig(learning_rate=0.05))
    return NodeEngine(settings, bundle, FrozenStage.shared(bundle))


def batches(scenario: Scenario, n: int) -> list[Batch]:
    events = scenario.events(DEVICE, True)[:n]
    return [
        Batch(e.x, e.y, seq=seq, t=T0 + 60 * seq, source="digits")
        for seq, e in enumerate(events, 1)
    ]


def rows(state: Path) -> Rows:
    """Every row of every table of the device's state file, as a second reader sees it."""
    path = NodeStore.path_for(state, DEVICE)
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        names = [n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {n: sorted(db.execute(f'SELECT * FROM "{n}"').fetchall(), key=repr) for n in names}
    finally:
        db.close()


def learned_state(state: Path) -> Rows:
    """:func:`rows` without what tells two files of the same learning apart: when each was
    created (``meta``, the migrations applied) and the host time each event took."""
    path = NodeStore.path_for(state, DEVICE)
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        columns = [c[1] for c in db.execute("PRAGMA table_info(events)")]
    finally:
        db.close()
    at = columns.index(HOST_TIME)
    out = {n: r for n, r in rows(state).items() if n not in BIRTH_TABLES}
    out["events"] = [(*r[:at], None, *r[at + 1 :]) for r in out["events"]]
    return out


def in_memory(eng: NodeEngine) -> tuple[Any, ...]:
    params = {k: v.copy() for k, v in eng.head.params().items()}
    return eng.last_seq, eng.state, eng.battery.to_dict(), params, eng.memory.contents()


def assert_same_memory(a: tuple[Any, ...], b: tuple[Any, ...]) -> None:
    assert a[:3] == b[:3]
    assert a[3].keys() == b[3].keys()
    for key in a[3]:
        np.testing.assert_array_equal(a[3][key], b[3][key])
    for x, y in zip(a[4], b[4], strict=True):
        np.testing.assert_array_equal(x, y)


def test_a_brownout_mid_event_leaves_the_state_as_before_the_event(
    default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    batch = batches(digits_nic, 4)
    eng = engine(state, default_bundle)
    for b in batch[:3]:
        assert eng.apply(b).learned
    before, memory_before = rows(state), in_memory(eng)
    assert all(before[t] for t in EVENT_TABLES)  # every table an event writes holds something
    assert len(before["replay"]) > 0 and memory_before[0] == 3

    eng.cut_power_in_next_event()
    with pytest.raises(PowerLost):
        eng.apply(batch[3])
    assert rows(state) == before  # on disk: every row of every table as before the event
    assert_same_memory(in_memory(eng), memory_before)  # and the live state reloaded from it
    eng.close()
    assert rows(state) == before  # closing commits nothing of it either

    # the device restarts from its file and learns the interrupted batch once
    again = engine(state, default_bundle)
    assert_same_memory(in_memory(again), memory_before)
    assert again.apply(batch[3]).learned
    again.close()

    # exactly what a device that never browned out holds after the same four batches
    never = tmp_path / "never"
    reference = engine(never, default_bundle)
    for b in batch:
        reference.apply(b)
    reference.close()
    assert learned_state(state) == learned_state(never)
    (log,) = {tuple(r[0] for r in rows(state)["events"])}
    assert log == (1, 2, 3, 4)
