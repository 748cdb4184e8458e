"""Tables of a node's state file, created and upgraded by the ``vega-node`` migrations.

``meta``     one row (id 1): device_id, model_id, config (JSON), created (ISO 8601 UTC)
``weights``  name, dtype (numpy ``dtype.str``, little-endian), shape (JSON list), data (raw BLOB):
             the adaptive stage's FP32 parameters and optimizer buffers, one snapshot
``state``    one row (id 1): last_seq, events_applied, sim_time, gaps (seqs skipped because
             they never arrived; migration 0002), last_latency_s (migration 0004)
``battery``  (migration 0004) at most one row (id 1): the battery as last committed, one column
             per field of :class:`~device.node.store.snapshots.BatterySnapshot`; no row until
             the node first spends energy
``lifetime`` (migration 0004) at most one row (id 1): the lifetime estimator as last committed,
             one column per field of :class:`~device.node.store.snapshots.LifetimeSnapshot`
``energy_totals`` (migration 0004) one row (id 1): joules spent by stage, ``{stage}_j``
``inference_counters`` (migration 0004) one row (id 1): the fields of
             :class:`~device.learning.inference.InferenceCounters`
``events``   the log of the batches the node handled, one row each: seq (primary key, so a
             ``seq`` can never be logged twice), t, samples, accuracy, energy (JSON), host_s,
             outcome (``learned``, ``depleted`` or ``failed``; migration 0002); only the most
             recent rows are kept (migration 0006, ``event_window``)
``event_window`` (migration 0006) at most one row (id 1), once the log was first pruned:
             first_seq (the first seq the node ever logged) and kept_from (the seqs below it
             were pruned from ``events``)
``gap_ranges`` (migration 0006) one row per gap given up: first, last (the seqs that never
             arrived); with ``event_window`` it tells a pruned handled seq from a skipped one
``desired``  (migration 0007) at most one row (id 1), once an operator's desired state was
             applied: version, settings (JSON object: only the settings the operator set), seq
             and t (the last seq learned, and its simulated time, when it took effect); written
             in the transaction that applied it
``own_head`` (migration 0007) the node's own adaptive stage (weights and optimizer buffers,
             laid out like ``weights``) as it was when the node first left it for a pushed head;
             empty while the node learns on its own head
``deferred`` (migration 0008) the batches a node running ``defer-to-sun`` holds for the sun,
             one row each: seq (primary key; its event is logged ``deferred`` in the same
             transaction), t, source, meta (JSON object), and its arrays x, y and ids laid out
             like ``weights`` (dtype, shape, raw bytes; no ids: NULL); a row is removed in the
             transaction that learns its batch, or that drops it for good
``inferences`` the last charged inference requests (migration 0003): seq (their own sequence,
             primary key), n (the node's inference count when it was charged; the window is
             the rows with the largest n), samples
``class_metrics`` (migration 0005) one row per class the node was trained on or measured:
             label (primary key), accuracy, best_earlier, trained_accuracy, first_seen_event,
             last_trained_event, last_trained_t, trained_events, recurrences (the fields of
             :class:`~device.node.classbook.ClassRow`, what the long-horizon metrics are drawn
             from); written in the transaction of the event or evaluation that changed them

Before migration 0004 the battery, the energy bookkeeping (``lifetime``, ``totals``,
``last_latency_s``) and the inference counters were JSON objects in columns of ``state``;
0004 moves their values into the typed tables and drops those columns, in the one transaction
the migration runs in. Each migration is a record of the layout it produced: it names its
columns itself and never imports the classes that read them today.

The replay tables belong to :mod:`device.node.store.replay_schema` (migration set ``vega-replay``).
"""

from __future__ import annotations

import json
from typing import Any

import sqlite_utils

from device.node.store.errors import StoreCorruptError

__all__ = ["MIGRATIONS"]

MIGRATIONS = sqlite_utils.Migrations("vega-node")


@MIGRATIONS(name="0001_node")
def _create_node(db: sqlite_utils.Database) -> None:
    db.table("meta").create(
        {"id": int, "device_id": str, "model_id": str, "config": str, "created": str},
        pk="id",
        not_null={"device_id", "model_id", "config", "created"},
    )
    db.table("weights").create(
        {"name": str, "dtype": str, "shape": str, "data": bytes},
        pk="name",
        not_null={"dtype", "shape", "data"},
    )
    db.table("state").create(
        {
            "id": int,
            "last_seq": int,
            "events_applied": int,
            "sim_time": float,
            "battery": str,
            "energy": str,
        },
        pk="id",
        not_null={"events_applied", "battery", "energy"},
    )
    db.execute(
        "INSERT INTO state (id, last_seq, events_applied, sim_time, battery, energy)"
        " VALUES (1, NULL, 0, NULL, '{}', '{}')"
    )
    db.table("events").create(
        {
            "seq": int,
            "t": float,
            "samples": int,
            "accuracy": float,
            "energy": str,
            "host_s": float,
        },
        pk="seq",
        not_null={"t", "samples", "energy", "host_s"},
    )


@MIGRATIONS(name="0002_gaps_and_outcomes")
def _gaps_and_outcomes(db: sqlite_utils.Database) -> None:
    db.execute("ALTER TABLE state ADD COLUMN gaps INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE events ADD COLUMN outcome TEXT NOT NULL DEFAULT 'learned'")
    db.execute("UPDATE events SET outcome = 'depleted' WHERE samples = 0")


@MIGRATIONS(name="0003_inference")
def _inference(db: sqlite_utils.Database) -> None:
    db.execute("ALTER TABLE state ADD COLUMN inference TEXT NOT NULL DEFAULT '{}'")
    db.table("inferences").create(
        {"seq": int, "n": int, "samples": int}, pk="seq", not_null={"n", "samples"}
    )
    db.execute("CREATE INDEX inferences_n ON inferences (n)")


_BATTERY = ("capacity_j", "remaining_j", "sleep_w", "drawn_j")
_LIFETIME = {
    "nominal_events_per_hour": float,
    "nominal_energy_j": float,
    "nominal_latency_s": float,
    "events": int,
    "first_t": float,
    "last_t": float,
    "energy_sum_j": float,
    "latency_sum_s": float,
    "inferences": int,
    "inference_first_t": float,
    "inference_last_t": float,
    "inference_energy_sum_j": float,
    "inference_latency_sum_s": float,
}
_LIFETIME_ADDED = tuple(name for name in _LIFETIME if name.startswith("inference"))
_STAGES = ("frozen", "adaptive", "memory", "idle", "total")
_INFERENCE = {
    "count": int,
    "energy_j": float,
    "since_count": int,
    "since_energy_j": float,
    "since_latency_s": float,
    "preq_right": int,
    "preq_n": int,
}


@MIGRATIONS(name="0004_typed_state")
def _typed_state(db: sqlite_utils.Database) -> None:
    row = db.execute("SELECT battery, energy, inference FROM state WHERE id = 1").fetchone()
    if row is None:
        raise StoreCorruptError("the state file has no state row")
    battery, energy, inference = (
        _json_object(name, text)
        for name, text in zip(("battery", "energy", "inference"), row, strict=True)
    )
    lifetime = _json_object("energy.lifetime", energy.get("lifetime", {}))
    totals = _json_object("energy.totals", energy.get("totals", {}))
    unknown = sorted(set(totals) - set(_STAGES))
    if unknown:
        raise StoreCorruptError(f"energy totals hold unknown stages {unknown}")

    db.table("battery").create(
        {"id": int} | dict.fromkeys(_BATTERY, float), pk="id", not_null=set(_BATTERY)
    )
    db.table("lifetime").create({"id": int} | _LIFETIME, pk="id", not_null=set(_LIFETIME))
    totals_columns = tuple(f"{stage}_j" for stage in _STAGES)
    db.table("energy_totals").create(
        {"id": int} | dict.fromkeys(totals_columns, float), pk="id", not_null=set(totals_columns)
    )
    db.table("inference_counters").create(
        {"id": int} | _INFERENCE, pk="id", not_null=set(_INFERENCE)
    )
    if battery:
        _insert(db, "battery", {name: _value("battery", battery, name) for name in _BATTERY})
    if lifetime:
        _insert(
            db,
            "lifetime",
            {  # a state saved before inference was modelled has no inference* keys
                name: 0
                if name in _LIFETIME_ADDED and name not in lifetime
                else _value("energy.lifetime", lifetime, name)
                for name in _LIFETIME
            },
        )
    _insert(
        db,
        "energy_totals",
        {
            f"{stage}_j": _value("energy.totals", totals, stage) if stage in totals else 0.0
            for stage in _STAGES
        },
    )
    _insert(
        db,
        "inference_counters",  # counters saved before some of them existed start at 0
        {
            name: _value("inference", inference, name) if name in inference else 0
            for name in _INFERENCE
        },
    )
    last_latency_s = (
        _value("energy", energy, "last_latency_s") if "last_latency_s" in energy else 0.0
    )
    db.execute("ALTER TABLE state ADD COLUMN last_latency_s REAL NOT NULL DEFAULT 0")
    db.execute("UPDATE state SET last_latency_s = ? WHERE id = 1", [last_latency_s])
    db.table("state").transform(drop={"battery", "energy", "inference"})


def _json_object(name: str, value: Any) -> dict[str, Any]:
    """A JSON object from the old layout (its text, or already parsed); anything else is corrupt."""
    try:
        data = json.loads(value) if isinstance(value, str) else value
    except ValueError as exc:
        raise StoreCorruptError(f"state {name} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise StoreCorruptError(f"state {name} must be a JSON object, got {value!r:.80}")
    return data


def _value(owner: str, data: dict[str, Any], name: str) -> float:
    """``data[name]``, a number; a missing key or another type is corrupt."""
    if name not in data:
        raise StoreCorruptError(f"state {owner} is missing {name!r}")
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StoreCorruptError(f"state {owner}.{name} must be a number, got {value!r:.80}")
    return value


def _insert(db: sqlite_utils.Database, table: str, values: dict[str, Any]) -> None:
    columns = ", ".join(values)
    marks = ", ".join("?" for _ in values)
    db.execute(f"INSERT INTO {table} (id, {columns}) VALUES (1, {marks})", list(values.values()))


@MIGRATIONS(name="0005_class_metrics")
def _class_metrics(db: sqlite_utils.Database) -> None:
    db.table("class_metrics").create(
        {
            "label": int,
            "accuracy": float,
            "best_earlier": float,
            "trained_accuracy": float,
            "first_seen_event": int,
            "last_trained_event": int,
            "last_trained_t": float,
            "trained_events": int,
            "recurrences": int,
        },
        pk="label",
        not_null={"trained_events", "recurrences"},
    )


@MIGRATIONS(name="0006_event_window")
def _event_window(db: sqlite_utils.Database) -> None:
    db.table("event_window").create(
        {"id": int, "first_seq": int, "kept_from": int},
        pk="id",
        not_null={"first_seq", "kept_from"},
    )
    db.table("gap_ranges").create({"first": int, "last": int}, pk="first", not_null={"last"})


@MIGRATIONS(name="0007_desired")
def _desired(db: sqlite_utils.Database) -> None:
    db.table("desired").create(
        {"id": int, "version": int, "settings": str, "seq": int, "t": float},
        pk="id",
        not_null={"version", "settings"},
    )
    db.table("own_head").create(
        {"name": str, "dtype": str, "shape": str, "data": bytes},
        pk="name",
        not_null={"dtype", "shape", "data"},
    )


@MIGRATIONS(name="0008_deferred")
def _deferred(db: sqlite_utils.Database) -> None:
    db.table("deferred").create(
        {
            "seq": int,
            "t": float,
            "source": str,
            "meta": str,
            "x_dtype": str,
            "x_shape": str,
            "x": bytes,
            "y_dtype": str,
            "y_shape": str,
            "y": bytes,
            "ids_dtype": str,
            "ids_shape": str,
            "ids": bytes,
        },
        pk="seq",
        not_null={"t", "source", "meta", "x_dtype", "x_shape", "x", "y_dtype", "y_shape", "y"},
    )
