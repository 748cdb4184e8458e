"""Write a recording: :class:`RunRecorder`, fed from the asyncio loop one message at a time."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from dataset_stream.protocol import FaultReport, NodeMessage, RolloutState, Status, Telemetry
from device.observe.errors import RecordError
from device.observe.recorder.schema import (
    APPLICATION_ID,
    ENERGY_PHASES,
    SCHEMA_SQL,
    SCHEMA_VERSION,
    is_recording,
)
from device.private import private_database

log = logging.getLogger(__name__)

FLUSH_EVERY_S: Final = 1.0
FLUSH_EVERY_ROWS: Final = 1000

_INSERT: Final = {
    "telemetry": "INSERT OR IGNORE INTO telemetry VALUES (" + ",".join("?" * 21) + ")",
    "status": "INSERT INTO status VALUES (?,?,?,?,?,?,?)",
    "error": "INSERT INTO error VALUES (?,?,?,?,?,?,?)",
    "fault": "INSERT INTO fault VALUES (?,?,?,?,?,?,?,?,?,?,?)",
    "rollout": "INSERT INTO rollout VALUES (?,?,?,?,?,?,?,?,?,?)",
}


class RunRecorder:
    """``with RunRecorder(path, meta={...}) as r: r.add(device, message, received)``.

    ``meta``: JSON-able values stored in the ``run`` table (``started`` is added if missing).
    Raises :class:`RecordError` for a file that exists (empty files excepted) or cannot be made.
    """

    def __init__(self, path: Path, *, meta: Mapping[str, object] | None = None) -> None:
        self.path = Path(path)
        if self.path.exists() and (not self.path.is_file() or self.path.stat().st_size > 0):
            kind = "a recording" if is_recording(self.path) else "not a recording"
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
                for statement in SCHEMA_SQL.split(";"):
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
        self._buffered()

    def add_fault(self, report: FaultReport, received: float) -> None:
        """Buffer an injected fault a node reported (docs/faults.md), as :meth:`add` does."""
        if self.closed:
            raise RecordError(f"the recording {self.path} is closed")
        self._n += 1
        self.added += 1
        self._rows["fault"].append(
            (
                self._n,
                received,
                report.device,
                report.kind,
                report.index,
                report.n,
                report.at_s,
                report.fired_s,
                report.seq,
                report.duration_s,
                report.to_json().decode(),
            )
        )
        self._buffered()

    def add_rollout(self, state: RolloutState, received: float) -> None:
        """Buffer a rollout's step (docs/downlink.md), as :meth:`add` does."""
        if self.closed:
            raise RecordError(f"the recording {self.path} is closed")
        self._n += 1
        self.added += 1
        percent = float(state.stages[state.stage]) if state.stages else 0.0
        self._rows["rollout"].append(
            (
                self._n,
                received,
                state.name,
                state.head,
                state.state,
                state.stage,
                percent,
                len(state.devices),
                state.reason,
                state.to_json().decode(),
            )
        )
        self._buffered()

    def _buffered(self) -> None:
        """One more row buffered: commit now if enough rows or time went by, else arm the timer."""
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
                for table in ("status", "error", "fault", "rollout"):
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


__all__ = ["FLUSH_EVERY_ROWS", "FLUSH_EVERY_S", "RunRecorder"]
