"""Tables of a node's state file, created and upgraded by the ``vega-node`` migrations.

``meta``     one row (id 1): device_id, model_id, config (JSON), created (ISO 8601 UTC)
``weights``  name, dtype (numpy ``dtype.str``, little-endian), shape (JSON list), data (raw BLOB):
             the adaptive stage's FP32 parameters and optimizer buffers, one snapshot
``state``    one row (id 1): last_seq, events_applied, sim_time, battery and energy (JSON), gaps
             (seqs skipped because they never arrived; migration 0002), inference (JSON:
             inference counters and prequential scores; migration 0003)
``events``   append-only log, one row per batch the node handled: seq (primary key, so a ``seq``
             can never be logged twice), t, samples, accuracy, energy (JSON), host_s, outcome
             (``learned``, ``depleted`` or ``failed``; migration 0002)
``inferences`` the last charged inference requests (migration 0003): seq (their own sequence,
             primary key), n (the node's inference count when it was charged; the window is
             the rows with the largest n), samples

The replay tables belong to :mod:`device.node.store.replay_schema` (migration set ``vega-replay``).
"""

from __future__ import annotations

import sqlite_utils

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
