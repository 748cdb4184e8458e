"""State files written before the typed state (migration 0004) open with the same values.

The fixture is the old layout written directly with sqlite3: the tables the ``vega-node``
migrations 0001-0003 and ``vega-replay`` 0001 created (their DDL as SQLite recorded it), and the
state row's JSON as the previous engine wrote it after three learned events, two inferences, a
gap of two seqs and a failed batch.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from dataset_stream import Scenario
from dataset_stream.protocol import Batch
from device.learning.inference import InferenceCounters
from device.model.bundle import ModelBundle
from device.model.frozen import FrozenStage
from device.node.engine import NodeEngine
from device.node.persistence import model_id
from device.node.settings import NodeSettings, ReplaySettings
from device.node.store import EventRecord, NodeState, NodeStore, StoreCorruptError
from device.node.store.snapshots import BatterySnapshot, EnergyTotals, LifetimeSnapshot

DEVICE = "node-0007"
MODEL = "default-v1-c247582c33ba07d7"

OLD_LAYOUT = """
CREATE TABLE "_sqlite_migrations" (
   "id" INTEGER PRIMARY KEY,
   "migration_set" TEXT,
   "name" TEXT,
   "applied_at" TEXT
);
CREATE UNIQUE INDEX "idx__sqlite_migrations_migration_set_name"
    ON "_sqlite_migrations" ("migration_set", "name");
CREATE TABLE "meta" (
   "id" INTEGER PRIMARY KEY,
   "device_id" TEXT NOT NULL,
   "model_id" TEXT NOT NULL,
   "config" TEXT NOT NULL,
   "created" TEXT NOT NULL
);
CREATE TABLE "weights" (
   "name" TEXT PRIMARY KEY,
   "dtype" TEXT NOT NULL,
   "shape" TEXT NOT NULL,
   "data" BLOB NOT NULL
);
CREATE TABLE "state" (
   "id" INTEGER PRIMARY KEY,
   "last_seq" INTEGER,
   "events_applied" INTEGER NOT NULL,
   "sim_time" REAL,
   "battery" TEXT NOT NULL,
   "energy" TEXT NOT NULL
, gaps INTEGER NOT NULL DEFAULT 0, inference TEXT NOT NULL DEFAULT '{}');
CREATE TABLE "events" (
   "seq" INTEGER PRIMARY KEY,
   "t" REAL NOT NULL,
   "samples" INTEGER NOT NULL,
   "accuracy" REAL,
   "energy" TEXT NOT NULL,
   "host_s" REAL NOT NULL
, outcome TEXT NOT NULL DEFAULT 'learned');
CREATE TABLE "inferences" (
   "seq" INTEGER PRIMARY KEY,
   "n" INTEGER NOT NULL,
   "samples" INTEGER NOT NULL
);
CREATE INDEX inferences_n ON inferences (n);
CREATE TABLE "replay_config" (
   "id" INTEGER PRIMARY KEY,
   "capacity" INTEGER NOT NULL,
   "bits" INTEGER NOT NULL,
   "shape" TEXT NOT NULL,
   "updates" INTEGER NOT NULL
);
CREATE TABLE "replay" (
   "slot" INTEGER PRIMARY KEY,
   "label" INTEGER NOT NULL,
   "scale" REAL NOT NULL,
   "zero_point" REAL NOT NULL,
   "codes" BLOB NOT NULL
);
"""
OLD_MIGRATIONS = [
    ("vega-node", "0001_node"),
    ("vega-node", "0002_gaps_and_outcomes"),
    ("vega-node", "0003_inference"),
    ("vega-replay", "0001_replay"),
]

OLD_BATTERY = (
    '{"capacity_j": 39204.0, "remaining_j": 39203.91209642759, "sleep_w": 1.7e-06,'
    ' "drawn_j": 0.08790357241516403}'
)
OLD_LIFETIME = (
    '{"nominal_events_per_hour": 60.0, "nominal_energy_j": 0.08467023812751272,'
    ' "nominal_latency_s": 1.3655294859276246, "events": 3, "first_t": 1764000060.0,'
    ' "last_t": 1764000180.0, "energy_sum_j": 0.08761895580659806,'
    ' "latency_sum_s": 1.4131045033322267, "inferences": 2, "inference_first_t": 1764000150.0,'
    ' "inference_last_t": 1764000160.0, "inference_energy_sum_j": 8.199438707994205e-05,'
    ' "inference_latency_sum_s": 0.0013224901141926136}'
)
OLD_TOTALS = (
    '{"frozen": 0.001151352247116532, "adaptive": 0.08646112695948152, "memory": 6.4766e-06,'
    ' "total": 0.08782157802808407, "idle": 0.00020262222148602395}'
)
OLD_ENERGY = (
    f'{{"lifetime": {OLD_LIFETIME}, "totals": {OLD_TOTALS}, "last_latency_s": 0.603969044048736}}'
)
OLD_INFERENCE = (
    '{"count": 2, "energy_j": 8.199438707994205e-05, "since_count": 0, "since_energy_j": 0.0,'
    ' "since_latency_s": 0.0, "preq_right": 0, "preq_n": 5}'
)
OLD_EVENTS = [
    (1, 1764000060.0, 146, None, '{"total": 0.012633914970782307, "idle": 0.0}', 0.19, "learned"),
    (2, 1764000120.0, 143, None, '{"total": 0.03763745209456105}', 0.48, "learned"),
    (3, 1764000180.0, 142, None, '{"total": 0.03755021096274073}', 0.35, "learned"),
    (6, 1764000400.0, 0, None, "{}", 0.0, "failed"),
]


def write_old_file(
    state_dir: Path,
    *,
    model: str = MODEL,
    battery: str = OLD_BATTERY,
    energy: str = OLD_ENERGY,
    inference: str = OLD_INFERENCE,
    counters: tuple[int | None, int, float | None, int] = (6, 3, 1764000180.0, 2),
) -> Path:
    """A state file in the layout before migration 0004; ``counters``: last_seq,
    events_applied, sim_time, gaps."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / f"{DEVICE}.db"
    conn = sqlite3.connect(path)
    conn.executescript(OLD_LAYOUT)
    conn.executemany(
        "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) VALUES (?, ?, ?)",
        [(group, name, "2026-01-01 00:00:00+00:00") for group, name in OLD_MIGRATIONS],
    )
    conn.execute(
        "INSERT INTO meta VALUES (1, ?, ?, ?, ?)",
        (DEVICE, model, '{"lr_size": 50}', "2026-01-01T00:00:00+00:00"),
    )
    last_seq, events_applied, sim_time, gaps = counters
    conn.execute(
        "INSERT INTO state (id, last_seq, events_applied, sim_time, battery, energy, gaps,"
        " inference) VALUES (1, ?, ?, ?, ?, ?, ?, ?)",
        (last_seq, events_applied, sim_time, battery, energy, gaps, inference),
    )
    conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", OLD_EVENTS)
    conn.executemany("INSERT INTO inferences VALUES (?, ?, ?)", [(1, 1, 5), (2, 2, 5)])
    conn.commit()
    conn.close()
    return path


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """The schema and every row of every table, read through a separate connection."""
    conn = sqlite3.connect(path)
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    out = {n: conn.execute(f"SELECT * FROM [{n}] ORDER BY rowid").fetchall() for n in names}
    out["sqlite_master"] = conn.execute("SELECT * FROM sqlite_master ORDER BY name").fetchall()
    conn.close()
    return out


def expected_state() -> NodeState:
    """The old JSON, read by hand into the typed state."""
    totals = {f"{stage}_j": joules for stage, joules in json.loads(OLD_TOTALS).items()}
    return NodeState(
        last_seq=6,
        events_applied=3,
        sim_time=1764000180.0,
        gaps=2,
        battery=BatterySnapshot(**json.loads(OLD_BATTERY)),
        lifetime=LifetimeSnapshot(**json.loads(OLD_LIFETIME)),
        energy_totals=EnergyTotals(**totals),
        last_latency_s=0.603969044048736,
        inference=InferenceCounters(**json.loads(OLD_INFERENCE)),
    )


def test_an_old_state_file_opens_with_the_same_values(tmp_path: Path) -> None:
    write_old_file(tmp_path)
    with NodeStore.open(tmp_path, DEVICE, MODEL) as store:
        state = store.state()
        assert state == expected_state()
        assert state.battery is not None and state.battery.remaining_j == 39203.91209642759
        assert state.lifetime is not None and state.lifetime.inference_latency_sum_s == (
            0.0013224901141926136
        )
        assert state.energy_totals.idle_j == 0.00020262222148602395
        assert state.inference.preq_n == 5 and state.inference.count == 2
        # the rest of the file is as the old node left it
        assert store.events() == [
            EventRecord(seq, t, n, acc, json.loads(energy), host_s, outcome)
            for seq, t, n, acc, energy, host_s, outcome in OLD_EVENTS
        ]
        assert store.inference_samples(2) == 5 and store.has_event(6) and not store.has_event(4)
        columns = {c.name for c in store.db.table("state").columns}
        assert columns == {"id", "last_seq", "events_applied", "sim_time", "gaps", "last_latency_s"}
        applied = store.db.execute(
            "SELECT name FROM _sqlite_migrations WHERE migration_set = 'vega-node' ORDER BY id"
        ).fetchall()
        assert [name for (name,) in applied][-4:] == [
            "0005_class_metrics",
            "0006_event_window",
            "0007_desired",
            "0008_deferred",
        ]
        assert store.desired() is None and store.own_head() is None  # no operator yet
        assert store.deferred() == []  # nothing held for the sun
        assert store.class_rows() == []  # no class measured yet: the factory's, as they start
    migrated = dump(tmp_path / f"{DEVICE}.db")
    with NodeStore.open(tmp_path, DEVICE, MODEL) as again:  # migrated once, read as is
        assert again.state() == expected_state()
    assert dump(tmp_path / f"{DEVICE}.db") == migrated


@pytest.mark.parametrize(
    ("battery", "energy", "inference", "expected"),
    [
        pytest.param("{}", "{}", "{}", NodeState(), id="a node that never ran"),
        pytest.param(  # a brown-out of an inference before any event
            '{"capacity_j": 10.0, "remaining_j": 0.0, "sleep_w": 0.0, "drawn_j": 10.0}',
            '{"totals": {"idle": 10.0}}',
            '{"count": 0, "energy_j": 0.0}',
            NodeState(
                battery=BatterySnapshot(10.0, 0.0, 0.0, 10.0),
                energy_totals=EnergyTotals(idle_j=10.0),
            ),
            id="totals only",
        ),
        pytest.param(  # a lifetime saved before inference was modelled
            "{}",
            '{"lifetime": {"nominal_events_per_hour": 60, "nominal_energy_j": 0.5,'
            ' "nominal_latency_s": 1.5, "events": 1, "first_t": 5.0, "last_t": 5.0,'
            ' "energy_sum_j": 0.25, "latency_sum_s": 1.0}, "last_latency_s": 1.0}',
            "{}",
            NodeState(
                lifetime=LifetimeSnapshot(60.0, 0.5, 1.5, 1, 5.0, 5.0, 0.25, 1.0, 0, 0, 0, 0, 0),
                last_latency_s=1.0,
            ),
            id="lifetime before inference",
        ),
    ],
)
def test_older_and_emptier_layouts_open(
    tmp_path: Path, battery: str, energy: str, inference: str, expected: NodeState
) -> None:
    write_old_file(
        tmp_path,
        battery=battery,
        energy=energy,
        inference=inference,
        counters=(None, 0, None, 0),
    )
    with NodeStore.open(tmp_path, DEVICE, MODEL) as store:
        assert store.state() == expected


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"battery": '{"capacity_j": 1.0, "remaining_j": 1.0, "sleep_w": 0.0}'}, "drawn_j"),
        ({"battery": "not json"}, "battery is not JSON"),
        ({"energy": '{"lifetime": []}'}, "energy.lifetime must be a JSON object"),
        ({"energy": '{"totals": {"radio": 1.0}}'}, "unknown stages"),
        ({"inference": '{"count": "two"}'}, "inference.count must be a number"),
    ],
)
def test_a_damaged_old_file_is_refused_and_left_as_it_was(
    tmp_path: Path, fields: dict[str, str], match: str
) -> None:
    """The migration runs in one transaction: a value it cannot convert leaves no half-migrated
    file behind, and the error says which value."""
    path = write_old_file(tmp_path, **fields)  # type: ignore[arg-type]
    before = dump(path)
    for _ in range(2):
        with pytest.raises(StoreCorruptError, match=match):
            NodeStore.open(tmp_path, DEVICE, MODEL)
        assert dump(path) == before


def test_an_engine_on_an_old_file_goes_on_from_its_values(
    default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    """The engine rebuilt from an old file holds its battery and lifetime, and its next event
    draws from them: idle time counts from the old last latency, totals add to the old ones."""
    write_old_file(tmp_path, model=model_id(default_bundle))
    settings = NodeSettings(DEVICE, tmp_path, replay=ReplaySettings(50, 8))
    engine = NodeEngine(settings, default_bundle, FrozenStage.shared(default_bundle))
    try:
        assert engine.battery.to_dict() == json.loads(OLD_BATTERY)
        assert engine.lifetime.to_dict() == json.loads(OLD_LIFETIME)
        assert engine.last_seq == 6 and engine.state.gaps == 2
        assert engine.prequential.n == 5
        event = digits_nic.events(DEVICE)[0]
        t = 1764000180.0 + 600
        telemetry = engine.apply(Batch(event.x, event.y, seq=7, t=t, source="t")).telemetry
        assert telemetry.events == 4 and telemetry.gaps == 2
        idle_s = t - 1764000180.0 - 0.603969044048736
        assert telemetry.energy_j["idle"] == engine.profile.sleep_w * idle_s
        spent = telemetry.energy_j["total"]
        assert engine.battery.remaining_j == 39203.91209642759 - spent
        state = engine.store.state()
        old_totals = json.loads(OLD_TOTALS)
        assert state.energy_totals.total_j == old_totals["total"] + spent
        assert state.lifetime is not None and state.lifetime.events == 4
        assert state.last_latency_s == telemetry.latency_s["total"]
        assert engine.has_event(7) and engine.memory.size == 50
    finally:
        engine.close()
