"""Read a recording back: :func:`load_run` (numpy columns), :func:`iter_messages` (messages)."""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from dataset_stream.protocol import ErrorMessage, NodeMessage, ProtocolError, Status, Telemetry
from device.observe.errors import RecordError
from device.observe.recorder.classes import ClassColumns, read_classes
from device.observe.recorder.schema import ENERGY_PHASES, open_recording


@dataclass(frozen=True, slots=True)
class RecordedMessage:
    """One message as it was added: ``kind`` is ``telemetry``, ``status`` or ``error``."""

    n: int
    kind: str
    device: str
    received: float
    message: NodeMessage


def iter_messages(path: Path) -> Iterator[RecordedMessage]:
    """The messages of the recording at ``path``, decoded again, in the order they were added."""
    db = open_recording(path)
    decode: dict[str, type[Telemetry] | type[Status] | type[ErrorMessage]] = {
        "telemetry": Telemetry,
        "status": Status,
        "error": ErrorMessage,
    }
    union = " UNION ALL ".join(
        f"SELECT n, '{kind}', device, received, json FROM {kind}" for kind in decode
    )
    try:
        for n, kind, device, received, text in db.execute(union + " ORDER BY n"):
            try:
                message = decode[kind].from_json(text)
            except ProtocolError as exc:
                raise RecordError(f"{path}: {kind} row {n}: {exc}") from None
            yield RecordedMessage(n, kind, device, received, message)
    except sqlite3.Error as exc:
        raise RecordError(f"cannot read the recording {path}: {exc}") from exc
    finally:
        db.close()


@dataclass(frozen=True, slots=True)
class TelemetryColumns:
    """Every telemetry of a run, one entry per row, sorted by device then simulated time ``t``.

    ``device`` indexes :attr:`RunData.devices` (int64 ``[n]``); ``accuracy`` and ``lifetime_h``
    are NaN where the message had null; ``energy_j`` maps each phase of
    :data:`ENERGY_PHASES` to float64 ``[n]``. Times: ``t`` simulated, ``received`` wall (unix s).
    ``measured``: bool ``[n]``, whether the row's accuracy was measured at its own event (its
    ``accuracy_events`` absent or equal to ``events``), not carried from an older one.
    """

    device: np.ndarray
    seq: np.ndarray
    t: np.ndarray
    received: np.ndarray
    state: np.ndarray  # str objects
    samples: np.ndarray
    events: np.ndarray
    accuracy: np.ndarray
    soc: np.ndarray
    remaining_j: np.ndarray
    lifetime_h: np.ndarray
    energy_j: Mapping[str, np.ndarray]
    latency_total_s: np.ndarray
    host_s: np.ndarray
    measured: np.ndarray

    def __len__(self) -> int:
        return int(self.device.shape[0])


@dataclass(frozen=True, slots=True)
class StatusRow:
    device: str
    received: float
    state: str
    t: float | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class ErrorRow:
    device: str
    received: float
    code: str
    seq: int | None
    message: str


@dataclass(frozen=True, slots=True)
class FaultRow:
    """An injected fault a node reported: due at ``at_s``, carried out at ``fired_s``
    (simulated seconds after the device's first batch), at batch ``seq``."""

    device: str
    received: float
    kind: str
    index: int
    n: int
    at_s: float
    fired_s: float
    seq: int | None
    duration_s: float | None


@dataclass(frozen=True, slots=True)
class RolloutRow:
    """A step of a rollout: its ``state`` at stage ``stage`` (``percent`` of the fleet, with
    ``devices`` moved so far), and why it halted (``reason``)."""

    name: str
    received: float
    head: str
    state: str
    stage: int
    percent: float
    devices: int
    reason: str


@dataclass(frozen=True, slots=True)
class RunData:
    """A recording read back: ``meta`` (the ``run`` table), ``devices`` (sorted, every device
    that sent anything), telemetry columns, status changes and errors in arrival order, and the
    per-class figures (:mod:`device.observe.recorder.classes`)."""

    path: Path
    meta: Mapping[str, Any]
    devices: tuple[str, ...]
    telemetry: TelemetryColumns
    statuses: tuple[StatusRow, ...]
    errors: tuple[ErrorRow, ...]
    classes: ClassColumns
    faults: tuple[FaultRow, ...] = ()  # injected faults, in arrival order
    rollouts: tuple[RolloutRow, ...] = ()  # rollout steps, in arrival order
    #: Joules the nodes' radios spent, summed over the telemetry (its ``energy_j`` ``radio``,
    #: in ``total``); None when no telemetry reports a radio.
    radio_j: float | None = None
    #: Joules the nodes' harvesters brought in, summed over the telemetry (its ``energy_j``
    #: ``harvest``, not in ``total``); None when no telemetry reports a harvest.
    harvest_j: float | None = None


_COLUMNS: Final = (
    "device, seq, t, received, state, samples, events, accuracy, soc, remaining_j, lifetime_h, "
    "energy_frozen_j, energy_adaptive_j, energy_memory_j, energy_idle_j, energy_total_j, "
    "latency_total_s, host_s, json_extract(json, '$.accuracy_events')"
)


def load_run(path: Path) -> RunData:
    """Read the recording at ``path``: :class:`RecordError` (:class:`NotARecording` for another
    kind of file) if it cannot be read."""
    db = open_recording(path)
    try:
        meta = {key: json.loads(value) for key, value in db.execute("SELECT key, value FROM run")}
        rows = db.execute(f"SELECT {_COLUMNS} FROM telemetry ORDER BY device, t, seq").fetchall()
        order = db.execute("SELECT n FROM telemetry ORDER BY device, t, seq").fetchall()
        classes = read_classes(db, {n: i for i, (n,) in enumerate(order)})
        statuses = tuple(
            StatusRow(*row)
            for row in db.execute(
                "SELECT device, received, state, t, reason FROM status ORDER BY n"
            )
        )
        errors = tuple(
            ErrorRow(*row)
            for row in db.execute(
                "SELECT device, received, code, seq, message FROM error ORDER BY n"
            )
        )
        faults = _faults(db)
        rollouts = _rollouts(db)
        radio_j, harvest_j = db.execute(
            "SELECT SUM(json_extract(json, '$.energy_j.radio')), "
            "SUM(json_extract(json, '$.energy_j.harvest')) FROM telemetry"
        ).fetchone()
    except (sqlite3.Error, ValueError) as exc:
        raise RecordError(f"cannot read the recording {path}: {exc}") from exc
    finally:
        db.close()
    names = {row[0] for row in rows} | {s.device for s in statuses} | {e.device for e in errors}
    devices = tuple(sorted(names))
    return RunData(
        path=Path(path),
        meta=meta,
        devices=devices,
        telemetry=_columns(rows, {d: i for i, d in enumerate(devices)}),
        radio_j=None if radio_j is None else float(radio_j),
        harvest_j=None if harvest_j is None else float(harvest_j),
        statuses=statuses,
        errors=errors,
        classes=classes,
        faults=faults,
        rollouts=rollouts,
    )


def _faults(db: sqlite3.Connection) -> tuple[FaultRow, ...]:
    """The recording's injected faults (none in a recording made before they were kept)."""
    query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'fault'"
    if db.execute(query).fetchone() is None:
        return ()
    columns = "device, received, kind, fault_index, occurrence, at_s, fired_s, seq, duration_s"
    return tuple(FaultRow(*row) for row in db.execute(f"SELECT {columns} FROM fault ORDER BY n"))


def _rollouts(db: sqlite3.Connection) -> tuple[RolloutRow, ...]:
    """The recording's rollout steps (none in a recording made before they were kept)."""
    query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'rollout'"
    if db.execute(query).fetchone() is None:
        return ()
    columns = "name, received, head, state, stage, percent, devices, reason"
    return tuple(
        RolloutRow(*row) for row in db.execute(f"SELECT {columns} FROM rollout ORDER BY n")
    )


def _columns(rows: list[tuple[Any, ...]], index: Mapping[str, int]) -> TelemetryColumns:
    cols = list(zip(*rows, strict=True)) if rows else [()] * 19

    def floats(i: int) -> np.ndarray:
        return np.array([math.nan if v is None else v for v in cols[i]], dtype=np.float64)

    def ints(i: int) -> np.ndarray:
        return np.array(cols[i], dtype=np.int64)

    return TelemetryColumns(
        device=np.array([index[d] for d in cols[0]], dtype=np.int64),
        seq=ints(1),
        t=floats(2),
        received=floats(3),
        state=np.array(cols[4], dtype=object),
        samples=ints(5),
        events=ints(6),
        accuracy=floats(7),
        soc=floats(8),
        remaining_j=floats(9),
        lifetime_h=floats(10),
        energy_j={phase: floats(11 + i) for i, phase in enumerate(ENERGY_PHASES)},
        latency_total_s=floats(16),
        host_s=floats(17),
        measured=np.array(
            [at is None or at == n for at, n in zip(cols[18], cols[6], strict=True)], dtype=bool
        ),
    )


__all__ = [
    "ErrorRow",
    "RecordedMessage",
    "RolloutRow",
    "RunData",
    "StatusRow",
    "TelemetryColumns",
    "iter_messages",
    "load_run",
]
