"""The per-class figures of a recording, read from the messages' JSON by SQLite itself.

Telemetry carries per-class maps (``accuracy_by_class``, ``forgetting_by_class``,
``events_since_class``) and the mean ``forgetting``; a node's status at ``events`` 0 carries the
factory model's accuracy (the start of its accuracy curve). They are in the recording's ``json``
column, not in columns of their own (the recording format stays the same), and are read with
SQLite's ``json_each`` / ``json_extract``, so a long run is not parsed message by message in
Python. Maps are read as long columns: one entry per (message, class).
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np

#: Class labels read at most (a label past it is ignored): far more than a node sends per class.
MAX_LABEL: Final = 4096
#: The telemetry maps read, by the name :class:`ClassColumns` gives them.
MAPS: Final = {
    "accuracy": "accuracy_by_class",
    "forgetting": "forgetting_by_class",
    "events_since": "events_since_class",
}


@dataclass(frozen=True, slots=True)
class ClassMap:
    """One per-class map of every telemetry, long: entry ``i`` is class ``label[i]`` of the
    telemetry at row ``row[i]`` of :class:`~device.observe.recorder.TelemetryColumns`."""

    row: np.ndarray  # int64
    label: np.ndarray  # int64
    value: np.ndarray  # float64

    def __len__(self) -> int:
        return int(self.row.shape[0])


@dataclass(frozen=True, slots=True)
class FactoryPoint:
    """A node's accuracy before its first learning event (its status at ``events`` 0)."""

    device: str
    accuracy: float
    by_class: Mapping[int, float]


@dataclass(frozen=True, slots=True)
class ClassColumns:
    """The per-class figures of a run: ``forgetting`` (the mean forgetting of each telemetry
    row, NaN where absent), the maps of :data:`MAPS` by name, and each device's first factory
    point."""

    forgetting: np.ndarray
    maps: Mapping[str, ClassMap]
    factory: tuple[FactoryPoint, ...]

    @property
    def any(self) -> bool:
        """Whether the run has per-class figures at all."""
        return any(len(m) for m in self.maps.values()) or bool(np.isfinite(self.forgetting).any())


def read_classes(db: sqlite3.Connection, row_of_n: Mapping[int, int]) -> ClassColumns:
    """The per-class figures of the recording open in ``db``; ``row_of_n`` maps a telemetry's
    ``n`` to its row in the telemetry columns."""
    forgetting = np.full(len(row_of_n), math.nan)
    for n, value in db.execute(
        "SELECT n, json_extract(json, '$.forgetting') FROM telemetry"
        " WHERE json_extract(json, '$.forgetting') IS NOT NULL"
    ):
        forgetting[row_of_n[n]] = float(value)
    maps = {name: _map(db, field, row_of_n) for name, field in MAPS.items()}
    return ClassColumns(forgetting=forgetting, maps=maps, factory=_factory_points(db))


def _map(db: sqlite3.Connection, field: str, row_of_n: Mapping[int, int]) -> ClassMap:
    rows, labels, values = [], [], []
    query = (
        f"SELECT t.n, j.key, j.value FROM telemetry AS t, json_each(t.json, '$.{field}') AS j"
        " WHERE json_type(t.json, '$." + field + "') = 'object'"
    )
    for n, key, value in db.execute(query):
        label = _label(key)
        if label is None or not isinstance(value, int | float):
            continue
        rows.append(row_of_n[n])
        labels.append(label)
        values.append(float(value))
    return ClassMap(
        row=np.array(rows, dtype=np.int64),
        label=np.array(labels, dtype=np.int64),
        value=np.array(values, dtype=np.float64),
    )


def _factory_points(db: sqlite3.Connection) -> tuple[FactoryPoint, ...]:
    seen: dict[str, FactoryPoint] = {}
    query = (
        "SELECT device, json_extract(json, '$.accuracy'), json_extract(json, '$.accuracy_by_class')"
        " FROM status WHERE json_extract(json, '$.events') = 0"
        " AND json_extract(json, '$.accuracy') IS NOT NULL ORDER BY n"
    )
    for device, accuracy, by_class in db.execute(query):
        if device in seen:
            continue
        parsed = json.loads(by_class) if isinstance(by_class, str) else {}
        labels = {
            label: float(v)
            for k, v in (parsed.items() if isinstance(parsed, dict) else ())
            if (label := _label(k)) is not None and isinstance(v, int | float)
        }
        seen[device] = FactoryPoint(device, float(accuracy), labels)
    return tuple(seen.values())


def _label(key: object) -> int | None:
    try:
        label = int(str(key))
    except ValueError:
        return None
    return label if 0 <= label <= MAX_LABEL else None


__all__ = ["MAPS", "MAX_LABEL", "ClassColumns", "ClassMap", "FactoryPoint", "read_classes"]
