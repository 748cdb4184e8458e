"""One node's persistent state: a SQLite file ``{state_dir}/{device_id}.db``.

The file holds the adaptive stage's weights, the latent-replay memory, the node's counters
(last applied ``seq``, battery, energy totals) and a log of applied events. A learning event
is committed as one transaction::

    with store.event_transaction() as tx:
        tx.save_weights(weights)
        memory.update(latents, labels, rng)        # memory = store.open_replay(config)
        tx.set_state(NodeState(last_seq=seq, ...))
        tx.log_event(EventRecord(seq=seq, ...))

All or nothing: an exception inside the block rolls everything back (and the replay mirror is
reloaded), leaving the file's content as it was. A node killed at any instant reopens the last
committed event; it decides whether a batch is new with ``store.state().last_seq``.

Durability: WAL journal with ``synchronous=FULL`` by default, so a committed event survives a
power loss, not only a process crash, before its telemetry is published. ``synchronous="NORMAL"``
(still crash-safe and consistent in WAL mode, but the last commits may be lost on power loss)
saves one fsync per event for large fleets.

Threads: the connection is created with ``check_same_thread=False`` so the node may call the
store from a worker thread (``asyncio.to_thread``), but it must be used by one thread at a time;
the node serialises its events, and nothing else shares the store.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import sqlite_utils

from dataset_stream.protocol import Batch
from device.learning.replay import FactoryReplays
from device.node.classbook import ClassRow
from device.node.store.arrays import decode_array
from device.node.store.checks import stored
from device.node.store.errors import (
    ModelMismatchError,
    ReplayStorageError,
    StoreCorruptError,
    StoreError,
)
from device.node.store.records import DesiredRecord, EventRecord, NodeState, StoreMeta
from device.node.store.replay import ReplayConfig, ReplayMemory
from device.node.store.replay_schema import MIGRATIONS as REPLAY_MIGRATIONS
from device.node.store.schema import MIGRATIONS
from device.node.store.state_rows import read_state
from device.node.store.transaction import CLASS_COLUMNS, EventTransaction
from device.private import private_database, private_dir

__all__ = ["NodeStore"]

DEVICE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


CACHE_KIB = 64


class NodeStore:
    """A node's state file; build it with :meth:`open`, close it (or use ``with``)."""

    def __init__(
        self,
        db: sqlite_utils.Database,
        path: Path,
        meta: StoreMeta,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
    ) -> None:
        self._db = db
        self._path = path
        self._meta = meta
        self._synchronous = synchronous
        self._replay: ReplayMemory | None = None
        self._replay_stale = False  # the mirror may hold uncommitted moves: reload before use
        self._closed = False
        #: While this says so, every commit fails as on a full disk (an injected
        #: ``storage_full``; nothing is written, the caller retries).
        self.refuse_writes: Callable[[], bool] | None = None

    @staticmethod
    def path_for(state_dir: str | Path, device_id: str) -> Path:
        """``state_dir/{device_id}.db``, after checking the device id."""
        if not isinstance(device_id, str) or not DEVICE_ID.fullmatch(device_id):
            raise ValueError(f"device id must match [A-Za-z0-9_-]{{1,64}}, got {device_id!r}")
        return Path(state_dir) / f"{device_id}.db"

    @classmethod
    def open(
        cls,
        state_dir: str | Path,
        device_id: str,
        model_id: str,
        *,
        config: Mapping[str, Any] | None = None,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
    ) -> NodeStore:
        """Open (creating if needed) the state file of ``device_id`` for model ``model_id``.

        ``config`` is recorded when the file is created. Raises :class:`ModelMismatchError` if
        the file was created for another model or device.
        """
        path = cls.path_for(state_dir, device_id)
        if not isinstance(model_id, str) or not model_id:
            raise ValueError(f"model id must be a non-empty string, got {model_id!r}")
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}")
        try:
            private_dir(path.parent)
            private_database(path)  # before SQLite: its -wal and -shm take the file's mode
            conn = sqlite3.connect(path, check_same_thread=False, timeout=10.0)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open state file {path}: {exc}") from exc
        try:
            db = sqlite_utils.Database(conn, execute_plugins=False)
            db.enable_wal()
            db.execute(f"PRAGMA synchronous={synchronous}")
            # a node reads its file once at start and then writes: a small page cache is
            # enough, and keeps thousands of nodes per process affordable (default: 2 MiB)
            db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            MIGRATIONS.apply(db)
            REPLAY_MIGRATIONS.apply(db)
            meta = _ensure_meta(db, path, device_id, model_id, config or {})
        except sqlite3.OperationalError as exc:  # locked, read-only, disk full, ...
            conn.close()
            raise StoreError(f"cannot open state file {path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreCorruptError(f"{path} is not a usable vega-emu state file: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return cls(db, path, meta, synchronous)

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._db.close()

    def __enter__(self) -> NodeStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"state file {self._path} is closed")

    # -- read side ---------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    @property
    def meta(self) -> StoreMeta:
        return self._meta

    @property
    def db(self) -> sqlite_utils.Database:
        """The underlying database (for tools and tests; write only through the store)."""
        return self._db

    @property
    def replay(self) -> ReplayMemory | None:
        """The memory opened by :meth:`open_replay`, if any."""
        return self._replay

    def open_replay(
        self,
        config: ReplayConfig,
        *,
        factory: FactoryReplays | None = None,
        rng: np.random.Generator | None = None,
    ) -> ReplayMemory:
        """Open the node's replay memory (a new one starts from ``factory``, see
        :meth:`ReplayMemory.open`); the store reloads it when an event rolls back."""
        self._check_open()
        self._replay = ReplayMemory.open(self._db, config, factory=factory, rng=rng)
        return self._replay

    def load_weights(self) -> dict[str, npt.NDArray[np.generic]] | None:
        """The last committed weights, or None if no event has saved any."""
        rows = self._read("SELECT name, dtype, shape, data FROM weights ORDER BY name")
        return {r[0]: decode_array(*r) for r in rows} or None

    def own_head(self) -> dict[str, npt.NDArray[np.generic]] | None:
        """The node's own head kept while it runs a pushed one, or None."""
        rows = self._read("SELECT name, dtype, shape, data FROM own_head ORDER BY name")
        return {r[0]: decode_array(*r) for r in rows} or None

    def desired(self) -> DesiredRecord | None:
        """The operator's desired state in force, or None if none was ever applied."""
        rows = self._read("SELECT version, settings, seq, t FROM desired WHERE id = 1")
        if not rows:
            return None
        version, settings, seq, t = rows[0]
        try:
            values = json.loads(settings)
        except ValueError as exc:
            raise StoreCorruptError(f"{self._path}: desired settings are not JSON") from exc
        if not isinstance(values, dict):
            raise StoreCorruptError(f"{self._path}: desired settings are not a JSON object")
        return stored(DesiredRecord, version, values, seq, t)

    def state(self) -> NodeState:
        """The node's counters as of the last commit (or inside a transaction, its writes)."""
        return read_state(self._read, self._path)

    def events(self) -> list[EventRecord]:
        """The event log, by ``seq`` (its most recent rows: ``transaction.EVENT_LOG_KEEP``)."""
        rows = self._read(
            "SELECT seq, t, samples, accuracy, energy, host_s, outcome FROM events ORDER BY seq"
        )
        return [
            stored(EventRecord, r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6]) for r in rows
        ]

    def class_rows(self) -> list[ClassRow]:
        """What the node remembers of each class (:mod:`device.node.classbook`), by label."""
        rows = self._read(f"SELECT {CLASS_COLUMNS} FROM class_metrics ORDER BY label")
        return [stored(ClassRow, *row) for row in rows]

    def has_event(self, seq: int) -> bool:
        """Whether the node handled ``seq`` (learned, depleted, failed): it is in the event log,
        or below the rows the log keeps, logged since the node's first seq and not in a gap."""
        self._check_open()
        try:
            if self._db.execute("SELECT 1 FROM events WHERE seq = ?", [seq]).fetchone():
                return True
            window = self._db.execute(
                "SELECT first_seq, kept_from FROM event_window WHERE id = 1"
            ).fetchone()
            if window is None or not window[0] <= seq < window[1]:
                return False
            skipped = self._db.execute(
                "SELECT 1 FROM gap_ranges WHERE first <= ? AND last >= ?", [seq, seq]
            ).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read {self._path}: {exc}") from exc
        return skipped is None

    def event_outcome(self, seq: int | None = None) -> str | None:
        """The outcome logged for ``seq`` (None: the latest event), if the log keeps it."""
        self._check_open()
        if seq is None:
            sql, args = "SELECT outcome FROM events ORDER BY seq DESC LIMIT 1", []
        else:
            sql, args = "SELECT outcome FROM events WHERE seq = ?", [seq]
        try:
            row = self._db.execute(sql, args).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read {self._path}: {exc}") from exc
        return None if row is None else str(row[0])

    def deferred(self) -> list[Batch]:
        """The batches held for the sun (``defer-to-sun``), by seq."""
        rows = self._read(
            "SELECT seq, t, source, meta, x_dtype, x_shape, x, y_dtype, y_shape, y,"
            " ids_dtype, ids_shape, ids FROM deferred ORDER BY seq"
        )
        held = []
        for seq, t, source, meta, *arrays in rows:
            x = decode_array("x", *arrays[0:3])
            y = decode_array("y", *arrays[3:6])
            ids = None if arrays[8] is None else decode_array("ids", *arrays[6:9])
            try:
                values = json.loads(meta)
            except ValueError as exc:
                raise StoreCorruptError(f"{self._path}: deferred seq {seq}: bad meta") from exc
            held.append(Batch(x=x, y=y, seq=seq, t=t, source=source, meta=values, ids=ids))
        return held

    def deferred_count(self) -> int:
        """How many batches are held for the sun."""
        return int(self._read("SELECT COUNT(*) FROM deferred")[0][0])

    def inference_samples(self, seq: int) -> int | None:
        """How many samples inference request ``seq`` had, if it is among the charged ones kept
        (:meth:`EventTransaction.log_inference`); None otherwise."""
        self._check_open()
        try:
            row = self._db.execute("SELECT samples FROM inferences WHERE seq = ?", [seq]).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read {self._path}: {exc}") from exc
        return None if row is None else int(row[0])

    def _read(self, sql: str) -> list[Any]:
        self._check_open()
        try:
            return self._db.execute(sql).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read {self._path}: {exc}") from exc

    # -- write side --------------------------------------------------------------------------

    @contextmanager
    def event_transaction(self, *, durable: bool = True) -> Iterator[EventTransaction]:
        """One SQLite transaction for everything an event changes; rolled back on any exception.

        ``durable=False`` commits this one transaction with ``synchronous=NORMAL`` (no fsync):
        it survives a crash of the process but not a power loss, until the next durable commit
        flushes the log (an inference's charge; see docs/protocol.md, "Inference").
        """
        self._check_open()
        if self._db.conn.in_transaction:
            raise StoreError("an event transaction is already open")
        if self._replay_stale:
            self._reload_replay()
        tx = EventTransaction(self._db)
        relaxed = not durable and self._synchronous == "FULL"
        try:
            if relaxed:
                self._db.execute("PRAGMA synchronous=NORMAL")
            with self._db.atomic():
                yield tx
                if self.refuse_writes is not None and self.refuse_writes():
                    # an injected full disk: the commit fails as SQLite's would
                    raise sqlite3.OperationalError("database or disk is full (injected)")
        except BaseException as exc:
            tx.finish()
            self._replay_stale = self._replay is not None  # drop the mirror's uncommitted moves
            with contextlib.suppress(StoreError):  # else: at the start of the next transaction
                self._reload_replay()
            if isinstance(exc, sqlite3.Error | ReplayStorageError):  # a full disk, an I/O error
                raise StoreError(f"event transaction failed: {exc}") from exc
            raise
        finally:
            tx.finish()
            if relaxed:
                self._restore_synchronous()

    def _reload_replay(self) -> None:
        """Re-read the replay mirror from the last commit (:class:`StoreError` if SQLite cannot)."""
        if self._replay is None:
            return
        try:
            self._replay.reload()
        except ReplayStorageError as exc:
            raise StoreError(f"cannot reload the replay memory: {exc}") from exc
        self._replay_stale = False

    def _restore_synchronous(self) -> None:
        try:
            self._db.execute(f"PRAGMA synchronous={self._synchronous}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot restore synchronous={self._synchronous}: {exc}") from exc


def _ensure_meta(
    db: sqlite_utils.Database, path: Path, device_id: str, model_id: str, config: Mapping[str, Any]
) -> StoreMeta:
    row = db.execute(
        "SELECT device_id, model_id, config, created FROM meta WHERE id = 1"
    ).fetchone()
    if row is None:
        meta = StoreMeta(device_id, model_id, config, datetime.now(UTC).isoformat())
        with db.atomic():
            db.execute(
                "INSERT INTO meta (id, device_id, model_id, config, created)"
                " VALUES (1, ?, ?, ?, ?)",
                [device_id, model_id, json.dumps(dict(meta.config)), meta.created],
            )
        return meta
    meta = stored(StoreMeta, row[0], row[1], json.loads(row[2]), row[3])
    if meta.model_id != model_id:
        raise ModelMismatchError(
            f"{path} holds the state of a node running model {meta.model_id!r}, but this node "
            f"runs model {model_id!r}; use another --state-dir or remove the file"
        )
    if meta.device_id != device_id:
        raise ModelMismatchError(
            f"{path} holds the state of device {meta.device_id!r}, not {device_id!r}"
        )
    return meta
