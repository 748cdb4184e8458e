"""Record a run: every telemetry, status and error a fleet published, in one SQLite file.

:class:`RunRecorder` is fed from the asyncio loop, one call per message, so :meth:`~RunRecorder.add`
only turns the message into a row and buffers it; rows are committed every
:data:`FLUSH_EVERY_S` seconds (a timer on the running loop, when there is one), every
:data:`FLUSH_EVERY_ROWS` rows, and on :meth:`~RunRecorder.close`. The file is in WAL mode: a
process killed at any instant loses at most the rows of the last second and never leaves a
damaged file. It is created 0600 (the reports say what the fleet learned).

A recording is one run. The recorder refuses an existing file (an empty one excepted): another
recording, so that two runs are never mixed up in one report, or any other file, so that nothing
is overwritten. :func:`load_run` reads a recording back into numpy columns for the report;
:func:`iter_messages` gives back the messages themselves, in the order they were added.

Tables (every row has ``n``, its place in arrival order, and ``received``, wall unix seconds):
``run`` (key, value as JSON: ``command``, ``config``, ``started``, ...), ``telemetry`` (the
figures a report needs as columns, and the message as JSON; one row per device and seq: a
redelivered seq is ignored and counted in :attr:`RunRecorder.repeated`), ``status`` and
``error``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sqlite3
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import numpy as np

from dataset_stream.errors import ProtocolError
from dataset_stream.protocol import ErrorMessage, NodeMessage, Status, Telemetry
from device.errors import DeviceError
from device.store.private import private_database

log = logging.getLogger(__name__)

#: ``PRAGMA application_id`` of a recording ("VEGR"): what tells it from other SQLite files.
APPLICATION_ID: Final = 0x56454752
SCHEMA_VERSION: Final = 1
FLUSH_EVERY_S: Final = 1.0
FLUSH_EVERY_ROWS: Final = 1000
ENERGY_PHASES: Final = ("frozen", "adaptive", "memory", "idle", "total")

_SCHEMA: Final = """
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
CREATE INDEX telemetry_device ON telemetry (device, t);
"""

_INSERT: Final = {
    "telemetry": "INSERT OR IGNORE INTO telemetry VALUES (" + ",".join("?" * 21) + ")",
    "status": "INSERT INTO status VALUES (?,?,?,?,?,?,?)",
    "error": "INSERT INTO error VALUES (?,?,?,?,?,?,?)",
}


class RecordError(DeviceError):
    """A recording cannot be created, written or read."""


class NotARecording(RecordError):
    """The file exists but is not a recording of vega-emu."""


class RunRecorder:
    """``with RunRecorder(path, meta={...}) as r: r.add(device, message, received)``.

    ``meta``: JSON-able values stored in the ``run`` table (``started`` is added if missing).
    Raises :class:`RecordError` for a file that exists (empty files excepted) or cannot be made.
    """

    def __init__(self, path: Path, *, meta: Mapping[str, object] | None = None) -> None:
        self.path = Path(path)
        if self.path.exists() and (not self.path.is_file() or self.path.stat().st_size > 0):
            kind = "a recording" if _is_recording(self.path) else "not a recording"
            raise RecordError(
                f"{self.path} exists ({kind}); a recording is written to a new file only"
            )
        values = {"started": time.time(), "schema": SCHEMA_VERSION, **(meta or {})}
        try:
            meta_rows = [(key, json.dumps(value, allow_nan=False)) for key, value in values.items()]
        except (TypeError, ValueError) as exc:
            raise RecordError(f"run metadata is not JSON: {exc}") from None
        try:
            private_database(self.path)
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            with self._db:  # a transaction: a half-made recording is never left behind
                self._db.execute("BEGIN")
                self._db.execute(f"PRAGMA application_id={APPLICATION_ID}")
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.executemany("INSERT INTO run VALUES (?, ?)", meta_rows)
        except (OSError, sqlite3.Error) as exc:
            raise RecordError(f"cannot create the recording {self.path}: {exc}") from exc
        self._rows: dict[str, list[tuple[Any, ...]]] = {k: [] for k in _INSERT}
        self._pending = 0
        self._n = 0
        self._last_flush = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self.added = 0  # messages given to add()
        self.repeated = 0  # telemetry rows ignored: a (device, seq) recorded before
        self.closed = False

    # -- writing -------------------------------------------------------------------------------

    def add(self, device: str, message: NodeMessage, received: float) -> None:
        """Buffer ``message`` of ``device``, arrived at wall time ``received`` (unix seconds).

        Never raises for a failed write (it is logged and retried; :meth:`flush` and
        :meth:`close` do raise it), only for a closed recorder."""
        if self.closed:
            raise RecordError(f"the recording {self.path} is closed")
        self._n += 1
        self.added += 1
        if isinstance(message, Telemetry):
            self._rows["telemetry"].append(_telemetry_row(self._n, received, device, message))
        elif isinstance(message, Status):
            row = (self._n, received, device, message.state, message.t, message.reason)
            self._rows["status"].append((*row, message.to_json().decode()))
        else:
            row = (self._n, received, device, message.code, message.seq, message.message)
            self._rows["error"].append((*row, message.to_json().decode()))
        self._pending += 1
        if (
            self._pending >= FLUSH_EVERY_ROWS
            or time.monotonic() - self._last_flush >= FLUSH_EVERY_S
        ):
            self._try_flush()
        elif self._timer is None:
            self._arm_timer()

    def flush(self) -> None:
        """Commit the buffered rows in one transaction; :class:`RecordError` if that fails (the
        rows stay buffered for the next try)."""
        self._cancel_timer()
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        try:
            with self._db:
                self._db.execute("BEGIN")
                before = self._db.total_changes
                telemetry = self._rows["telemetry"]
                self._db.executemany(_INSERT["telemetry"], telemetry)
                self.repeated += len(telemetry) - (self._db.total_changes - before)
                for table in ("status", "error"):
                    self._db.executemany(_INSERT[table], self._rows[table])
        except sqlite3.Error as exc:
            raise RecordError(f"cannot write the recording {self.path}: {exc}") from exc
        for rows in self._rows.values():
            rows.clear()
        self._pending = 0

    def close(self) -> None:
        """Flush and close; closing twice is harmless."""
        if self.closed:
            return
        try:
            self.flush()
        finally:
            self.closed = True
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _arm_timer(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # used without a loop: flushed by add() and close() only
            return
        self._timer = loop.call_later(FLUSH_EVERY_S, self._timed_flush)

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _timed_flush(self) -> None:
        self._timer = None
        if not self.closed:
            self._try_flush()

    def _try_flush(self) -> None:
        """Flush for add() and the timer: a failure is logged, never raised into the loop that
        feeds us; the rows stay buffered and the next flush (a second later) tries again."""
        try:
            self.flush()
        except RecordError as exc:
            log.error("%s; retrying", exc)
            self._arm_timer()


def _telemetry_row(n: int, received: float, device: str, msg: Telemetry) -> tuple[Any, ...]:
    energy = msg.energy_j
    return (
        n,
        received,
        device,
        msg.seq,
        msg.t,
        msg.state,
        msg.samples,
        msg.events,
        msg.gaps,
        msg.accuracy,
        msg.battery.soc,
        msg.battery.remaining_j,
        msg.lifetime_h,
        *(float(energy[phase]) for phase in ENERGY_PHASES),
        float(msg.latency_s["total"]),
        msg.host_s,
        msg.to_json().decode(),
    )


# -- reading ---------------------------------------------------------------------------------


def _is_recording(path: Path) -> bool:
    try:
        _open(path).close()
    except NotARecording:
        return False
    except RecordError:  # a recording we cannot read (locked, newer format)
        return True
    return True


def _open(path: Path) -> sqlite3.Connection:
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
    except sqlite3.DatabaseError as exc:
        db.close()
        raise NotARecording(f"{path} is not a vega-emu recording ({exc})") from exc
    if application_id != APPLICATION_ID:
        db.close()
        raise NotARecording(f"{path} is not a vega-emu recording (another SQLite database)")
    if version != SCHEMA_VERSION:
        db.close()
        raise RecordError(
            f"{path}: recording format {version}, this vega-emu reads {SCHEMA_VERSION}"
        )
    return db


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
    db = _open(path)
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
class RunData:
    """A recording read back: ``meta`` (the ``run`` table), ``devices`` (sorted, every device
    that sent anything), telemetry columns, status changes and errors in arrival order."""

    path: Path
    meta: Mapping[str, Any]
    devices: tuple[str, ...]
    telemetry: TelemetryColumns
    statuses: tuple[StatusRow, ...]
    errors: tuple[ErrorRow, ...]


_COLUMNS: Final = (
    "device, seq, t, received, state, samples, events, accuracy, soc, remaining_j, lifetime_h, "
    "energy_frozen_j, energy_adaptive_j, energy_memory_j, energy_idle_j, energy_total_j, "
    "latency_total_s, host_s"
)


def load_run(path: Path) -> RunData:
    """Read the recording at ``path``: :class:`RecordError` (:class:`NotARecording` for another
    kind of file) if it cannot be read."""
    db = _open(path)
    try:
        meta = {key: json.loads(value) for key, value in db.execute("SELECT key, value FROM run")}
        rows = db.execute(f"SELECT {_COLUMNS} FROM telemetry ORDER BY device, t, seq").fetchall()
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
        statuses=statuses,
        errors=errors,
    )


def _columns(rows: list[tuple[Any, ...]], index: Mapping[str, int]) -> TelemetryColumns:
    cols = list(zip(*rows, strict=True)) if rows else [()] * 18

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
    )


__all__ = [
    "APPLICATION_ID",
    "ENERGY_PHASES",
    "ErrorRow",
    "NotARecording",
    "RecordError",
    "RecordedMessage",
    "RunData",
    "RunRecorder",
    "StatusRow",
    "TelemetryColumns",
    "iter_messages",
    "load_run",
]
