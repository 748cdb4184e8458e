"""The writes of one learning event, valid only inside ``NodeStore.event_transaction()``."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import astuple, fields
from typing import Any, Final

import numpy.typing as npt
import sqlite_utils

from dataset_stream.protocol import Batch
from device.node.classbook import ClassRow
from device.node.store.arrays import encode_array
from device.node.store.errors import StoreError
from device.node.store.records import DesiredRecord, EventRecord, NodeState
from device.node.store.state_rows import state_writes

__all__ = ["CLASS_COLUMNS", "EVENT_LOG_KEEP", "EventTransaction"]

#: Rows of the event log kept: the most recent ones (a seq re-sent from further back than this
#: is still told apart as handled or skipped, by ``event_window`` and ``gap_ranges``). The log
#: is pruned back to this many once it holds :data:`_PRUNE_SLACK` more, so a node's file stays
#: bounded however long it runs.
EVENT_LOG_KEEP: Final = 1000
_PRUNE_SLACK: Final = 100

#: The columns of ``class_metrics``: the fields of :class:`ClassRow`, in order.
CLASS_COLUMNS: Final = ", ".join(f.name for f in fields(ClassRow))
_REPLACE_CLASS: Final = (
    f"INSERT OR REPLACE INTO class_metrics ({CLASS_COLUMNS})"
    f" VALUES ({', '.join('?' for _ in fields(ClassRow))})"
)


class EventTransaction:
    """The writes of one learning event; valid only inside :meth:`NodeStore.event_transaction`."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self._db = db
        self._open = True

    def finish(self) -> None:
        """Refuse any further write (called by the store when the block ends)."""
        self._open = False

    def _execute(self, sql: str, params: Any, *, many: bool = False) -> None:
        if not self._open or not self._db.conn.in_transaction:
            raise StoreError("this event transaction is finished")
        try:
            if many:
                self._db.conn.executemany(sql, params)
            else:
                self._db.conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write the event: {exc}") from exc

    def save_weights(self, weights: Mapping[str, npt.ArrayLike]) -> None:
        """Replace the stored weights by this snapshot (names not in it are dropped)."""
        rows = []
        for name, array in weights.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"weight names must be non-empty strings, got {name!r}")
            rows.append((name, *encode_array(name, array)))
        self._execute("DELETE FROM weights", ())
        self._execute(
            "INSERT INTO weights (name, dtype, shape, data) VALUES (?, ?, ?, ?)", rows, many=True
        )

    def save_own_head(self, weights: Mapping[str, npt.ArrayLike]) -> None:
        """Keep the node's own head (weights and optimizer buffers) while it runs a pushed one."""
        rows = [(name, *encode_array(name, array)) for name, array in weights.items()]
        self._execute("DELETE FROM own_head", ())
        self._execute(
            "INSERT INTO own_head (name, dtype, shape, data) VALUES (?, ?, ?, ?)", rows, many=True
        )

    def drop_own_head(self) -> None:
        """Forget the kept own head (the node is back on it)."""
        self._execute("DELETE FROM own_head", ())

    def set_desired(self, record: DesiredRecord) -> None:
        """Record the desired state now in force."""
        self._execute(
            "INSERT OR REPLACE INTO desired (id, version, settings, seq, t) VALUES (1, ?, ?, ?, ?)",
            (record.version, json.dumps(dict(record.settings)), record.seq, record.t),
        )

    def set_state(self, state: NodeState) -> None:
        """Replace the node's counters, battery, lifetime, energy and inference bookkeeping."""
        for sql, params in state_writes(state):
            self._execute(sql, params)

    def set_class_rows(self, rows: Iterable[ClassRow]) -> None:
        """Write these classes' records (the others stay as they are)."""
        self._execute(_REPLACE_CLASS, [astuple(row) for row in rows], many=True)

    def log_inference(self, seq: int, n: int, samples: int, *, window: int) -> None:
        """Record that inference request ``seq`` (the node's ``n``-th) was charged; keep only
        the ``window`` most recent ones. A ``seq`` already in the window is an error."""
        if self._db.execute("SELECT 1 FROM inferences WHERE seq = ?", [seq]).fetchone():
            raise StoreError(f"inference request {seq} is already charged")
        self._execute(
            "INSERT INTO inferences (seq, n, samples) VALUES (?, ?, ?)", (seq, n, samples)
        )
        self._execute("DELETE FROM inferences WHERE n <= ?", (n - window,))

    def log_gap(self, first: int, last: int) -> None:
        """Record that seqs ``first..last`` never arrived and were given up."""
        self._execute("INSERT INTO gap_ranges (first, last) VALUES (?, ?)", (first, last))

    def _prune_events(self) -> None:
        """Keep the :data:`EVENT_LOG_KEEP` most recent rows of the event log once it holds
        :data:`_PRUNE_SLACK` more, remembering where the pruned seqs began and ended."""
        probe = "SELECT seq FROM events ORDER BY seq DESC LIMIT 1 OFFSET ?"
        if self._db.execute(probe, [EVENT_LOG_KEEP + _PRUNE_SLACK]).fetchone() is None:
            return
        (cut,) = self._db.execute(probe, [EVENT_LOG_KEEP]).fetchone()
        self._execute(
            "INSERT INTO event_window (id, first_seq, kept_from)"
            " VALUES (1, (SELECT MIN(seq) FROM events), ?)"
            " ON CONFLICT(id) DO UPDATE SET kept_from = excluded.kept_from",
            (cut + 1,),
        )
        self._execute("DELETE FROM events WHERE seq <= ?", (cut,))

    def hold_deferred(self, batch: Batch) -> None:
        """Keep ``batch`` (its event logged ``deferred`` in this transaction) for the sun."""
        ids = (None, None, None) if batch.ids is None else encode_array("ids", batch.ids)
        self._execute(
            "INSERT INTO deferred (seq, t, source, meta, x_dtype, x_shape, x, y_dtype, y_shape,"
            " y, ids_dtype, ids_shape, ids) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                batch.seq,
                batch.t,
                batch.source,
                json.dumps(dict(batch.meta)),
                *encode_array("x", batch.x),
                *encode_array("y", batch.y),
                *ids,
            ),
        )

    def settle_deferred(self, record: EventRecord) -> None:
        """The held batch of seq ``record.seq`` was learned (or dropped for good): its row
        leaves ``deferred`` and its ``deferred`` line in the event log becomes ``record``."""
        if not self._db.execute("SELECT 1 FROM deferred WHERE seq = ?", [record.seq]).fetchone():
            raise StoreError(f"seq {record.seq} is not held for the sun")
        self._execute("DELETE FROM deferred WHERE seq = ?", (record.seq,))
        self._execute("DELETE FROM events WHERE seq = ? AND outcome = 'deferred'", (record.seq,))
        self.log_event(record)

    def drop_deferred_beyond(self, keep: int) -> list[int]:
        """Drop the oldest held batches beyond the ``keep`` newest, for good (logged
        ``policy``); their seqs, in order."""
        rows = self._db.execute(
            "SELECT seq, t FROM deferred ORDER BY seq DESC LIMIT -1 OFFSET ?", [keep]
        ).fetchall()
        dropped = sorted((int(seq), float(t)) for seq, t in rows)
        for seq, t in dropped:
            record = EventRecord(seq, t, 0, None, {}, 0.0, outcome="policy")
            self.settle_deferred(record)
        return [seq for seq, _ in dropped]

    def log_event(self, record: EventRecord) -> None:
        """Append one event to the log (pruning its oldest rows, :data:`EVENT_LOG_KEEP`); a
        ``seq`` already logged is an error."""
        if self._db.execute("SELECT 1 FROM events WHERE seq = ?", [record.seq]).fetchone():
            raise StoreError(f"seq {record.seq} is already in the event log")
        self._execute(
            "INSERT INTO events (seq, t, samples, accuracy, energy, host_s, outcome)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                record.seq,
                record.t,
                record.samples,
                record.accuracy,
                json.dumps(dict(record.energy)),
                record.host_s,
                record.outcome,
            ),
        )
        self._prune_events()
