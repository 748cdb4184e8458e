"""The delivery rules of a node as a state machine without I/O: :class:`SeqBook`.

The book is fed what happens (a batch with some ``seq`` arrived, the node committed a seq or a
gap, time passed) and answers with what to do, as typed decisions. It never sees a message,
a payload, a socket, the store or a real clock: the node keeps the held batches (keyed by seq),
looks up its event log, carries out each decision and acknowledges; time comes in as arguments
(seconds on a monotonic clock). So every rule can be checked without a broker.

The rules (docs/protocol.md, "Delivery guarantees"), for a node whose last committed seq is
``last`` (``None`` for a node that never learned):

- **next**: seq ``last + 1`` (``0`` or ``1`` for a node that never learned) is learned, and
  with it the held seqs that follow it without a hole: :class:`Learn`;
- **early**: a later seq is held (unacknowledged) until the missing ones arrive: :class:`Hold`,
  whose deadline is ``hold_s`` after the first hold or after the last progress, whichever is
  later; a second copy of a held seq is :class:`HeldCopy` (acknowledged, nothing else);
- **gap**: once the deadline passes, or as soon as more than ``max_held`` seqs are held or the
  held ones keep more than ``max_held_bytes`` (each arrival says what its batch keeps), the
  missing seqs before the lowest held one are given up as a :class:`Gap` and learning goes on
  from there (:meth:`SeqBook.due`); a node that never learned has nothing missing: it starts at
  the lowest seq it holds. So a node holds at most ``max_held`` batches and ``max_held_bytes``
  plus one batch, whatever a producer sends;
- **past**: a seq at or below ``last`` is a :class:`Duplicate` if the node handled it (learned,
  depleted or failed: it is in the event log) and :class:`Stale` if it was given up as a gap;
- **too far**: a seq more than ``max_seq_ahead`` past ``last`` is :class:`TooFarAhead`.

Protocol of use: act on each decision before feeding the next event. A :class:`Learn` is carried
out by committing its gap (if any, then :meth:`SeqBook.skipped`) and each of its seqs in order
(:meth:`SeqBook.committed` after each): the book's ``last_seq`` and held seqs move only on those
reports, so they are always what the node has committed and holds. After a restart, or a new
connection (held batches were never acknowledged: the broker sends them again), the book is
rebuilt from the committed last seq alone: ``SeqBook(rules, last_seq=...)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from device.node.settings import DeliverySettings


@dataclass(frozen=True, slots=True)
class Gap:
    """Seqs ``first..last`` (inclusive) never arrived and are given up for good."""

    first: int
    last: int

    def __post_init__(self) -> None:
        if not 0 <= self.first <= self.last:
            raise ValueError(f"a gap needs 0 <= first <= last, got {self.first}..{self.last}")

    @property
    def size(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True, slots=True)
class Learn:
    """Learn ``seqs`` now, in this order (consecutive; the first is the next one).

    ``gap``: the missing seqs just before ``seqs[0]``, to commit and report first (only when the
    hold deadline passed or too many are held, see :meth:`SeqBook.due`).
    """

    seqs: tuple[int, ...]
    gap: Gap | None = None

    def __post_init__(self) -> None:
        if not self.seqs or any(b != a + 1 for a, b in zip(self.seqs, self.seqs[1:], strict=False)):
            raise ValueError(f"Learn needs one or more consecutive seqs, got {self.seqs}")
        if self.gap is not None and self.gap.last + 1 != self.seqs[0]:
            raise ValueError(f"gap {self.gap} does not end just before seq {self.seqs[0]}")


@dataclass(frozen=True, slots=True)
class Hold:
    """``seq`` arrived early: keep it, unacknowledged, while ``waiting_for`` is missing.

    ``deadline_s``: when the missing seqs are given up unless progress is made first.
    """

    seq: int
    waiting_for: int
    deadline_s: float


@dataclass(frozen=True, slots=True)
class HeldCopy:
    """Another copy of a seq already held (a producer re-publishing): acknowledge it, no more."""

    seq: int


@dataclass(frozen=True, slots=True)
class Duplicate:
    """``seq`` was handled before (it is in the event log): answer ``duplicate``, apply nothing."""

    seq: int


@dataclass(frozen=True, slots=True)
class Stale:
    """``seq`` was given up as part of a gap before it arrived: answer ``stale_seq``."""

    seq: int


@dataclass(frozen=True, slots=True)
class TooFarAhead:
    """``seq`` is more than ``max_seq_ahead`` past ``last_seq``: refused (``bad_metadata``),
    instead of making every later batch look stale."""

    seq: int
    last_seq: int
    max_seq_ahead: int


Arrival = Learn | Hold | HeldCopy | Duplicate | Stale | TooFarAhead


class SeqBook:
    """Which seqs a node has committed and holds, and what to do with the next one.

    State: ``last_seq`` (the last seq committed, learned or given up; ``None`` if none), the
    seqs held with the bytes each keeps, and the hold deadline (``None`` exactly when nothing
    is held).
    """

    def __init__(self, rules: DeliverySettings, last_seq: int | None = None) -> None:
        if last_seq is not None and last_seq < 0:
            raise ValueError(f"last_seq must be >= 0 or None, got {last_seq}")
        self.rules = rules
        self._last_seq = last_seq
        self._held: dict[int, int] = {}  # seq -> bytes its held batch keeps
        self._deadline_s: float | None = None

    @property
    def last_seq(self) -> int | None:
        return self._last_seq

    @property
    def next_seq(self) -> int:
        """The seq learned as soon as it arrives."""
        return 1 if self._last_seq is None else self._last_seq + 1

    @property
    def held(self) -> tuple[int, ...]:
        """The seqs held, lowest first."""
        return tuple(sorted(self._held))

    @property
    def held_bytes(self) -> int:
        """What the held batches keep, in all (as their arrivals said)."""
        return sum(self._held.values())

    @property
    def deadline_s(self) -> float | None:
        """When the seqs missing before the held ones are given up (``None``: nothing held)."""
        return self._deadline_s

    def is_past(self, seq: int) -> bool:
        """Whether ``seq`` is at or below the last committed seq: :meth:`arrived` then needs to
        know whether the event log holds it (``handled``)."""
        return self._last_seq is not None and seq <= self._last_seq

    # -- events ------------------------------------------------------------------------------

    def arrived(
        self, seq: int, now_s: float, *, handled: bool = False, size_bytes: int = 0
    ) -> Arrival:
        """A batch with ``seq`` arrived at ``now_s``; ``handled``: whether the event log holds
        ``seq`` (looked at only when :meth:`is_past`); ``size_bytes``: what the batch keeps in
        memory if it is held."""
        if seq < 0:
            raise ValueError(f"seq must be >= 0, got {seq}")
        if size_bytes < 0:
            raise ValueError(f"size_bytes must be >= 0, got {size_bytes}")
        last = self._last_seq
        if last is not None and seq <= last:
            return Duplicate(seq) if handled else Stale(seq)
        if last is not None and seq - last > self.rules.max_seq_ahead:
            return TooFarAhead(seq, last, self.rules.max_seq_ahead)
        expected = self.next_seq
        if seq > expected:
            if seq in self._held:
                return HeldCopy(seq)
            self._held[seq] = size_bytes
            if self._deadline_s is None:
                self._deadline_s = now_s + self.rules.hold_s
            return Hold(seq, expected, self._deadline_s)
        # the next seq (or, for a node that never learned, seq 0)
        return Learn(self._run_from(seq))

    def due(self, now_s: float) -> Learn | None:
        """What is due at ``now_s``: the gap before the lowest held seq once the deadline has
        passed, more than ``max_held`` seqs are held or they keep more than ``max_held_bytes``;
        else nothing."""
        if not self._held or self._deadline_s is None:
            return None
        if now_s < self._deadline_s and not self.over_budget:
            return None
        first_held = min(self._held)
        last = self._last_seq
        gap = None
        if last is not None and first_held > last + 1:
            gap = Gap(last + 1, first_held - 1)
        return Learn(self._run_from(first_held), gap)

    @property
    def over_budget(self) -> bool:
        """Whether the held batches are too many, or keep too many bytes, to wait any longer."""
        rules = self.rules
        return len(self._held) > rules.max_held or self.held_bytes > rules.max_held_bytes

    def committed(self, seq: int, now_s: float) -> None:
        """The node committed ``seq`` (learned, depleted or failed) at ``now_s``."""
        if self._last_seq is not None and seq != self._last_seq + 1:
            raise ValueError(f"seq {seq} committed after seq {self._last_seq}: not the next one")
        self._last_seq = seq
        self._held.pop(seq, None)
        self._progress(now_s)

    def skipped(self, gap: Gap, now_s: float) -> None:
        """The node committed ``gap`` (those seqs are given up) at ``now_s``."""
        if self._last_seq is None or gap.first != self._last_seq + 1:
            raise ValueError(f"gap {gap.first}..{gap.last} does not follow seq {self._last_seq}")
        self._last_seq = gap.last
        self._progress(now_s)

    # -- helpers -----------------------------------------------------------------------------

    def _run_from(self, seq: int) -> tuple[int, ...]:
        """``seq`` and the held seqs that follow it without a hole."""
        end = seq
        while end + 1 in self._held:
            end += 1
        return tuple(range(seq, end + 1))

    def _progress(self, now_s: float) -> None:
        """The held seqs (if any) wait ``hold_s`` from now: the missing ones may be on their way."""
        self._deadline_s = now_s + self.rules.hold_s if self._held else None


__all__ = [
    "Arrival",
    "Duplicate",
    "Gap",
    "HeldCopy",
    "Hold",
    "Learn",
    "SeqBook",
    "Stale",
    "TooFarAhead",
]
