"""The latent-replay (LR) memory of a node, stored quantized in SQLite.

A :class:`ReplayMemory` lives in the node's own database (tables in
:mod:`device.node.store.replay_schema`)
and keeps an in-memory mirror of every stored LR (packed codes, scales, zero points, labels) so
that sampling a mini-batch never touches the disk. The mirror is rebuilt from the database when
the memory is opened and by :meth:`ReplayMemory.reload`.

:meth:`ReplayMemory.update` (the AR1* step, :mod:`device.learning.replay.policy`) writes inside the
caller's open transaction and never commits: the node commits it together with the weights
and the state. It refuses to run outside a transaction. The mirror is updated as soon as the
rows are written; if the caller's transaction then rolls back, the caller must call
:meth:`~ReplayMemory.reload` (``device.node.store.NodeStore`` does this for the memory it opened).
After a crash the mirror is rebuilt from what was committed, so both always agree.

A new memory starts from the model's factory replays (:class:`FactoryReplays`, fitted to its
size and bits) in the same transaction that records its config, as AR1* starts from the latents
of its initial training batch: that batch counts as AR1* event 0, so the first learning event
gets the quota ``lr_size // 2``. A memory that exists is never seeded again.

Not thread-safe: one thread at a time, like the connection it uses.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, replace
from math import prod
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlite_utils

from device.learning.replay.factory import FactoryReplays
from device.learning.replay.policy import ar1_writes, plan_placement
from device.learning.replay.quant import (
    SUPPORTED_BITS,
    QuantizedLR,
    dequantize_rows,
    quantize,
    row_bytes,
)
from device.node.store.errors import ReplayConfigError, ReplayStateError, ReplayStorageError
from device.node.store.replay_schema import MIGRATIONS

__all__ = ["ReplayConfig", "ReplayMemory"]


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    """``lr_size``: N_LR, the most LRs the memory holds (0: no replays); bits per value (32:
    FP32); shape of one latent.

    lr_size, bits and shape are recorded in the database and must match when it is reopened;
    ``class_balanced`` is only a replacement policy and may change between runs.
    """

    lr_size: int
    bits: int
    shape: tuple[int, ...]
    class_balanced: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.lr_size, bool) or not isinstance(self.lr_size, int):
            raise ReplayConfigError(f"lr_size must be an int, got {self.lr_size!r}")
        if self.lr_size < 0:
            raise ReplayConfigError(f"lr_size must be >= 0, got {self.lr_size}")
        if self.bits not in SUPPORTED_BITS:
            raise ReplayConfigError(f"bits must be one of {SUPPORTED_BITS}, got {self.bits!r}")
        shape = tuple(self.shape)
        if not shape or not all(isinstance(s, int) and s >= 1 for s in shape):
            raise ReplayConfigError(f"shape must be positive ints, got {self.shape!r}")
        object.__setattr__(self, "shape", shape)

    @property
    def dim(self) -> int:
        """Values per latent."""
        return prod(self.shape)


class ReplayMemory:
    """Quantized LR memory with AR1* replacement; open it with :meth:`open`."""

    def __init__(
        self, db: sqlite_utils.Database, config: ReplayConfig, *, created: bool = False
    ) -> None:
        self._db = db
        self._config = config
        self._row_bytes = row_bytes(config.dim, config.bits)
        #: Whether :meth:`open` created this memory (rather than finding it in the database).
        self.created = created
        self.reload()

    @classmethod
    def open(
        cls,
        db: sqlite_utils.Database,
        config: ReplayConfig,
        *,
        factory: FactoryReplays | None = None,
        rng: np.random.Generator | None = None,
    ) -> ReplayMemory:
        """Create the tables if needed (committing), check the stored config, load the mirror.

        A memory created here starts from ``factory``, fitted to the config's lr_size and bits
        (:meth:`FactoryReplays.fit`, drawing from ``rng``); one found in the database keeps
        what it holds.
        """
        if db.conn.in_transaction:
            raise ReplayStateError("open the replay memory outside of a transaction")
        if factory is not None and factory.shape != config.shape:
            raise ReplayConfigError(
                f"factory replays of shape {factory.shape} do not fit a memory of {config.shape}"
            )
        try:
            MIGRATIONS.apply(db)
            row = next(
                # the column ``capacity`` holds lr_size (see replay_schema)
                db.query("SELECT capacity, bits, shape FROM replay_config WHERE id = 1"),
                None,
            )
            if row is None:
                with db.atomic():
                    seeded = _seed_rows(factory, config, rng)
                    db.execute(
                        "INSERT INTO replay_config (id, capacity, bits, shape, updates)"
                        " VALUES (1, ?, ?, ?, ?)",
                        [
                            config.lr_size,
                            config.bits,
                            json.dumps(list(config.shape)),
                            int(bool(seeded)),  # the factory batch is AR1* event 0
                        ],
                    )
                    db.conn.executemany(
                        "INSERT INTO replay (slot, label, scale, zero_point, codes)"
                        " VALUES (?, ?, ?, ?, ?)",
                        seeded,
                    )
        except sqlite3.Error as exc:
            raise ReplayStateError(f"cannot open the replay tables: {exc}") from exc
        if row is not None:
            stored = (row["capacity"], row["bits"], tuple(json.loads(row["shape"])))
            wanted = (config.lr_size, config.bits, config.shape)
            if stored != wanted:
                raise ReplayConfigError(
                    "the replay memory in this database has (lr_size, bits, shape) = "
                    f"{stored}, but {wanted} was asked for; use another state directory "
                    "or the stored settings"
                )
        return cls(db, config, created=row is None)

    def reload(self) -> None:
        """Rebuild the in-memory mirror from the committed (or current) database content,
        with the lr_size and bits recorded there (:meth:`reconfigure` changes them)."""
        try:
            updates = next(
                self._db.query("SELECT capacity, bits, updates FROM replay_config WHERE id = 1")
            )
            rows = self._db.execute(
                "SELECT slot, label, scale, zero_point, codes FROM replay ORDER BY slot"
            ).fetchall()
        except sqlite3.Error as exc:
            raise ReplayStorageError(f"cannot read the replay memory: {exc}") from exc
        except StopIteration as exc:
            raise ReplayStateError(f"cannot read the replay memory: {exc}") from exc
        try:
            cfg = replace(self._config, lr_size=updates["capacity"], bits=updates["bits"])
        except ReplayConfigError as exc:
            raise ReplayStateError(f"the stored replay config is invalid: {exc}") from exc
        self._config = cfg
        self._row_bytes = row_bytes(cfg.dim, cfg.bits)
        size = len(rows)
        if size > cfg.lr_size or [r[0] for r in rows] != list(range(size)):
            raise ReplayStateError(f"replay slots are not 0..{size - 1} within {cfg.lr_size}")
        if any(len(r[4]) != self._row_bytes for r in rows):
            raise ReplayStateError(f"a replay row does not hold {self._row_bytes} code bytes")
        self._packed = np.zeros((cfg.lr_size, self._row_bytes), dtype=np.uint8)
        self._scale = np.zeros(cfg.lr_size, dtype=np.float32)
        self._zero_point = np.zeros(cfg.lr_size, dtype=np.float32)
        self._labels = np.zeros(cfg.lr_size, dtype=np.int64)
        if size:
            blob = b"".join(r[4] for r in rows)
            self._packed[:size] = np.frombuffer(blob, dtype=np.uint8).reshape(size, -1)
            self._scale[:size] = [r[2] for r in rows]
            self._zero_point[:size] = [r[3] for r in rows]
            self._labels[:size] = [r[1] for r in rows]
        self._size = size
        self._updates = int(updates["updates"])

    # -- read side ---------------------------------------------------------------------------

    @property
    def config(self) -> ReplayConfig:
        return self._config

    @property
    def lr_size(self) -> int:
        """N_LR: the most LRs the memory holds (the telemetry's ``replay.capacity``)."""
        return self._config.lr_size

    @property
    def bits(self) -> int:
        return self._config.bits

    @property
    def shape(self) -> tuple[int, ...]:
        return self._config.shape

    @property
    def size(self) -> int:
        """Occupied slots: the LRs held now, at most :attr:`lr_size` (the telemetry's
        ``replay.size``)."""
        return self._size

    @property
    def updates(self) -> int:
        """AR1* events applied so far (the ``i`` of the next event's quota)."""
        return self._updates

    @property
    def bytes_per_lr(self) -> int:
        """Bytes of one stored LR: packed codes, plus FP32 scale and zero point below 32 bits."""
        return self._row_bytes + (0 if self.bits == 32 else 8)

    @property
    def bytes(self) -> int:
        """Bytes of all stored LRs (codes + scales + zero points)."""
        return self._size * self.bytes_per_lr

    def writes_for(self, n_new: int) -> int:
        """How many of ``n_new`` latents the next :meth:`update` will store."""
        return ar1_writes(self.lr_size, self.size, self.updates, n_new)

    def stats(self) -> dict[str, int]:
        """The telemetry's ``"replay"`` object."""
        return {
            "size": self.size,
            "capacity": self.lr_size,
            "bits": self.bits,
            "bytes": self.bytes,
        }

    def class_counts(self) -> dict[int, int]:
        """Stored LRs per label."""
        labels, counts = np.unique(self._labels[: self._size], return_counts=True)
        return {int(c): int(n) for c, n in zip(labels, counts, strict=True)}

    def _stored(self, index: npt.NDArray[np.intp]) -> QuantizedLR:
        return QuantizedLR(
            self._packed[index],
            self._scale[index],
            self._zero_point[index],
            self.bits,
            self._config.dim,
        )

    def contents(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Every stored LR in slot order, dequantized: ``([size, *shape], [size])``."""
        index = np.arange(self._size)
        return self._dequantized(index), self._labels[index].copy()

    def sample(
        self, n: int, rng: np.random.Generator
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """``n`` random LRs, dequantized: float32 ``[n, *shape]`` and int64 labels ``[n]``.

        Without replacement when ``n <= size``, with replacement otherwise.
        """
        index = self._draw(n, rng)
        return self._dequantized(index), self._labels[index]

    def sample_into(
        self, n: int, rng: np.random.Generator, out: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.int64]:
        """:meth:`sample` (the same draws from ``rng``), with the LRs dequantized into ``out``
        (float32 ``[n, *shape]``, C-contiguous, e.g. the tail of a mini-batch); returns the
        labels."""
        if out.shape != (n, *self.shape) or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(
                f"out must be a C-contiguous float32 [{n}, {', '.join(map(str, self.shape))}] "
                f"array, got {out.dtype} {out.shape}"
            )
        index = self._draw(n, rng)
        self._dequantized(index, out)
        return self._labels[index]

    def _draw(self, n: int, rng: np.random.Generator) -> npt.NDArray[np.intp]:
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"n must be an int >= 0, got {n!r}")
        if n and not self._size:
            raise ReplayStateError(f"cannot sample {n} replays from an empty memory")
        index: npt.NDArray[np.intp] = (
            rng.choice(self._size, size=n, replace=n > self._size) if n else np.arange(0)
        )
        return index

    def _dequantized(
        self, index: npt.NDArray[np.intp], out: npt.NDArray[np.float32] | None = None
    ) -> npt.NDArray[np.float32]:
        x = dequantize_rows(
            self._packed[index],
            self._scale[index],
            self._zero_point[index],
            self.bits,
            self._config.dim,
            None if out is None else out.reshape(len(index), self._config.dim),
        )
        return x.reshape(len(index), *self.shape)

    # -- write side --------------------------------------------------------------------------

    def update(
        self, latents: npt.ArrayLike, labels: npt.ArrayLike, rng: np.random.Generator
    ) -> int:
        """Apply the AR1* step of one event with float ``[n_new, *shape]`` latents; return moves.

        Must run inside the caller's open transaction; does not commit. Counts one event even
        when nothing is stored (lr_size 0 or no new latents).
        """
        x = np.asarray(latents)
        y = np.asarray(labels)
        if x.shape[1:] != self.shape or x.ndim != len(self.shape) + 1:
            raise ValueError(
                f"latents must be [n, {', '.join(map(str, self.shape))}], got {x.shape}"
            )
        if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"labels must be integers [{len(x)}], got {y.dtype} {y.shape}")
        if not self._db.conn.in_transaction:
            raise ReplayStateError(
                "ReplayMemory.update() must run inside the event's transaction "
                "(NodeStore.event_transaction() or Database.atomic())"
            )
        placement = plan_placement(
            lr_size=self.lr_size,
            events_before=self._updates,
            slot_labels=self._labels[: self._size],
            new_labels=y,
            rng=rng,
            class_balanced=self._config.class_balanced,
        )
        q = quantize(x.reshape(len(x), -1)[placement.new_index], self.bits)
        new_labels = y.astype(np.int64)[placement.new_index]
        slots = placement.slots
        rows: list[tuple[Any, ...]] = [
            (int(s), int(lab), float(sc), float(zp), q.packed[j].tobytes())
            for j, (s, lab, sc, zp) in enumerate(
                zip(slots, new_labels, q.scale, q.zero_point, strict=True)
            )
        ]
        try:
            self._db.conn.executemany(
                "INSERT OR REPLACE INTO replay (slot, label, scale, zero_point, codes)"
                " VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            self._db.conn.execute(
                "UPDATE replay_config SET updates = ? WHERE id = 1", [self._updates + 1]
            )
        except sqlite3.Error as exc:
            raise ReplayStorageError(f"cannot write the replay memory: {exc}") from exc
        self._packed[slots] = q.packed
        self._scale[slots] = q.scale
        self._zero_point[slots] = q.zero_point
        self._labels[slots] = new_labels
        self._size += int((slots >= self._size).sum())
        self._updates += 1
        return len(slots)

    def reconfigure(self, lr_size: int, bits: int, rng: np.random.Generator) -> None:
        """Hold at most ``lr_size`` LRs of ``bits`` bits from now on, in place.

        Every kept LR is decoded and encoded again with ``bits``; a smaller ``lr_size`` drops
        LRs at random (class-balanced: always from a class that holds the most, when the
        memory's policy is); a larger one keeps them all. Must run inside the caller's open
        transaction, like :meth:`update`; the mirror follows at once (and is reloaded from
        the database, config included, if the transaction rolls back).
        """
        config = replace(self._config, lr_size=lr_size, bits=bits)  # checks both
        if not self._db.conn.in_transaction:
            raise ReplayStateError("ReplayMemory.reconfigure() must run inside a transaction")
        x, labels = self.contents()
        keep = _kept(labels, lr_size, rng, balanced=config.class_balanced)
        x, labels = x[keep], labels[keep]
        q = quantize(x.reshape(len(x), config.dim), bits)
        rows = [
            (slot, int(label), float(scale), float(zero_point), q.packed[slot].tobytes())
            for slot, (label, scale, zero_point) in enumerate(
                zip(labels, q.scale, q.zero_point, strict=True)
            )
        ]
        try:
            self._db.conn.execute("DELETE FROM replay")
            self._db.conn.executemany(
                "INSERT INTO replay (slot, label, scale, zero_point, codes) VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            self._db.conn.execute(
                "UPDATE replay_config SET capacity = ?, bits = ? WHERE id = 1", [lr_size, bits]
            )
        except sqlite3.Error as exc:
            raise ReplayStorageError(f"cannot write the replay memory: {exc}") from exc
        self.reload()


def _kept(
    labels: npt.NDArray[np.int64], n: int, rng: np.random.Generator, *, balanced: bool
) -> npt.NDArray[np.intp]:
    """Which of the LRs labelled ``labels`` a memory of ``n`` keeps, in slot order: all of them
    when they fit; else a random ``n`` of them, or, ``balanced``, the others dropped one at a
    time from a class that holds the most (ties broken at random)."""
    size = len(labels)
    if size <= n:
        return np.arange(size)
    if not balanced:
        return np.sort(rng.permutation(size)[:n])
    order = rng.permutation(size)  # each class drops its LRs in this (random) order
    classes, inverse = np.unique(labels[order], return_inverse=True)
    queues = [list(order[inverse == c]) for c in range(len(classes))]
    counts = np.array([len(q) for q in queues])
    dropped: list[int] = []
    for _ in range(size - n):
        largest = np.flatnonzero(counts == counts.max())
        c = int(largest[rng.integers(len(largest))])
        dropped.append(int(queues[c].pop()))
        counts[c] -= 1
    mask = np.ones(size, dtype=bool)
    mask[dropped] = False
    return np.flatnonzero(mask)


def _seed_rows(
    factory: FactoryReplays | None, config: ReplayConfig, rng: np.random.Generator | None
) -> list[tuple[Any, ...]]:
    """The ``replay`` rows a new memory starts with: ``factory`` fitted to ``config``."""
    if factory is None or config.lr_size == 0 or len(factory) == 0:
        return []
    fitted = factory.fit(config.lr_size, config.bits, rng or np.random.default_rng(0))
    q = fitted.lrs
    return [
        (slot, int(label), float(scale), float(zero_point), q.packed[slot].tobytes())
        for slot, (label, scale, zero_point) in enumerate(
            zip(fitted.labels, q.scale, q.zero_point, strict=True)
        )
    ]
