""":class:`NodeState` to and from the rows of the state file: the one place it is serialised.

The counters are columns of the ``state`` row; each typed part is one row (id 1) of its own
table, column for field (:mod:`device.node.store.schema`): ``battery`` and ``lifetime`` have no
row while the state holds None.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import astuple, fields
from typing import Any, Final

from device.learning.inference import InferenceCounters
from device.node.store.checks import stored
from device.node.store.errors import StoreCorruptError
from device.node.store.records import NodeState
from device.node.store.snapshots import BatterySnapshot, EnergyTotals, LifetimeSnapshot

__all__ = ["read_state", "state_writes"]

#: Reads one query's rows (the store wraps SQLite's errors).
Read = Callable[[str], list[Any]]

_COUNTERS: Final = ("last_seq", "events_applied", "sim_time", "gaps", "last_latency_s")
_PARTS: Final[dict[str, tuple[str, type[Any]]]] = {
    "battery": ("battery", BatterySnapshot),
    "lifetime": ("lifetime", LifetimeSnapshot),
    "energy_totals": ("energy_totals", EnergyTotals),
    "inference": ("inference_counters", InferenceCounters),
}


def _columns(cls: type[Any]) -> tuple[str, ...]:
    return tuple(item.name for item in fields(cls))


_SELECT: Final = {
    field: f"SELECT {', '.join(_columns(cls))} FROM {table} WHERE id = 1"
    for field, (table, cls) in _PARTS.items()
}
_REPLACE: Final = {
    field: (
        f"INSERT OR REPLACE INTO {table} (id, {', '.join(_columns(cls))})"
        f" VALUES (1, {', '.join('?' for _ in _columns(cls))})"
    )
    for field, (table, cls) in _PARTS.items()
}
_DELETE: Final = {field: f"DELETE FROM {table}" for field, (table, _) in _PARTS.items()}
_UPDATE_COUNTERS: Final = (
    f"UPDATE state SET {', '.join(f'{name} = ?' for name in _COUNTERS)} WHERE id = 1"
)


def read_state(read: Read, path: object) -> NodeState:
    """The node's state as the file holds it; :class:`StoreCorruptError` names a bad value."""
    rows = read(f"SELECT {', '.join(_COUNTERS)} FROM state WHERE id = 1")
    if not rows:
        raise StoreCorruptError(f"{path} has no state row")
    values = dict(zip(_COUNTERS, rows[0], strict=True))
    for field, (table, cls) in _PARTS.items():
        part = read(_SELECT[field])
        if part:
            values[field] = stored(cls, *part[0])
        elif field in ("energy_totals", "inference"):
            raise StoreCorruptError(f"{path} has no {table} row")
    return stored(NodeState, **values)


def state_writes(state: NodeState) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """The statements (SQL, parameters) that make the file hold ``state``."""
    yield _UPDATE_COUNTERS, tuple(getattr(state, name) for name in _COUNTERS)
    for field in _PARTS:
        part = getattr(state, field)
        if part is None:
            yield _DELETE[field], ()
        else:
            yield _REPLACE[field], astuple(part)
