"""What makes a file a recording: its tables, its SQLite ``application_id``, its errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Final

from device.observe.errors import NotARecording, RecordError, UnsupportedRecording

#: ``PRAGMA application_id`` of a recording ("VEGR"): what tells it from other SQLite files.
APPLICATION_ID: Final = 0x56454752
SCHEMA_VERSION: Final = 1
ENERGY_PHASES: Final = ("frozen", "adaptive", "memory", "idle", "total")

SCHEMA_SQL: Final = """
CREATE TABLE run (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE telemetry (
    n INTEGER PRIMARY KEY, received REAL NOT NULL, device TEXT NOT NULL, seq INTEGER NOT NULL,
    t REAL NOT NULL, state TEXT NOT NULL, samples INTEGER NOT NULL, events INTEGER NOT NULL,
    gaps INTEGER NOT NULL, accuracy REAL, soc REAL NOT NULL, remaining_j REAL NOT NULL,
    lifetime_h REAL, energy_frozen_j REAL NOT NULL, energy_adaptive_j REAL NOT NULL,
    energy_memory_j REAL NOT NULL, energy_idle_j REAL NOT NULL, energy_total_j REAL NOT NULL,
    latency_total_s REAL NOT NULL, host_s REAL NOT NULL, json TEXT NOT NULL,
    UNIQUE (device, seq)
);
CREATE TABLE status (
    n INTEGER PRIMARY KEY, received REAL NOT NULL, device TEXT NOT NULL, state TEXT NOT NULL,
    t REAL, reason TEXT, json TEXT NOT NULL
);
CREATE TABLE error (
    n INTEGER PRIMARY KEY, received REAL NOT NULL, device TEXT NOT NULL, code TEXT NOT NULL,
    seq INTEGER, message TEXT NOT NULL, json TEXT NOT NULL
);
CREATE TABLE fault (
    n INTEGER PRIMARY KEY, received REAL NOT NULL, device TEXT NOT NULL, kind TEXT NOT NULL,
    fault_index INTEGER NOT NULL, occurrence INTEGER NOT NULL, at_s REAL NOT NULL,
    fired_s REAL NOT NULL, seq INTEGER, duration_s REAL, json TEXT NOT NULL
);
CREATE TABLE rollout (
    n INTEGER PRIMARY KEY, received REAL NOT NULL, name TEXT NOT NULL, head TEXT NOT NULL,
    state TEXT NOT NULL, stage INTEGER NOT NULL, percent REAL NOT NULL, devices INTEGER NOT NULL,
    reason TEXT NOT NULL, json TEXT NOT NULL
);
CREATE INDEX telemetry_device ON telemetry (device, t);
"""
#: Tables a recording of schema 1 may lack (made before they were added): read as empty.
OPTIONAL_TABLES: Final = ("fault", "rollout")


def is_recording(path: Path) -> bool:
    """Whether ``path`` is a file of vega-emu's recording format (any version)."""
    if not path.is_file():
        return False
    try:
        open_recording(path).close()
    except UnsupportedRecording:
        return True
    except RecordError:  # not a recording, or one we cannot tell (unreadable, locked)
        return False
    return True


def open_recording(path: Path) -> sqlite3.Connection:
    """A read-only connection to the recording at ``path``.

    A recording is told by its ``application_id``, read through SQL: in WAL mode the database
    file's own header may not hold it yet (it is in the ``-wal`` file until a checkpoint)."""
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: no such recording")
    try:
        with open(path, "rb") as f:
            magic = f.read(16)
    except OSError as exc:
        raise RecordError(f"cannot read the recording {path}: {exc.strerror or exc}") from exc
    if magic != b"SQLite format 3\x00":
        raise NotARecording(f"{path} is not a vega-emu recording (not an SQLite file)")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise RecordError(f"cannot read the recording {path}: {exc}") from exc
    try:
        application_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.OperationalError as exc:  # locked, unreadable
        db.close()
        raise RecordError(f"cannot read the recording {path}: {exc}") from exc
    except sqlite3.DatabaseError as exc:  # not a database, or a malformed one
        db.close()
        raise NotARecording(f"{path} is not a vega-emu recording ({exc})") from exc
    if application_id != APPLICATION_ID:
        db.close()
        raise NotARecording(f"{path} is not a vega-emu recording (another SQLite database)")
    if version != SCHEMA_VERSION:
        db.close()
        raise UnsupportedRecording(
            f"{path}: recording format {version}, this vega-emu reads {SCHEMA_VERSION}"
        )
    return db


__all__ = [
    "APPLICATION_ID",
    "ENERGY_PHASES",
    "SCHEMA_SQL",
    "SCHEMA_VERSION",
    "is_recording",
    "open_recording",
]
