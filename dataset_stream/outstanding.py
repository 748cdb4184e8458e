"""Which published batches still wait for their node's answer, and when to publish them again.

A producer (the stream, the bridge) feeds an :class:`Outstanding` book what happens -- a batch
handed to the broker (:meth:`~Outstanding.sent`), published again (:meth:`~Outstanding.resent`),
an answer of its node (:meth:`~Outstanding.answered`, :meth:`~Outstanding.gap`,
:meth:`~Outstanding.heard`) -- with the time as an argument (seconds on a monotonic clock), and
asks it which batches to publish again now (:meth:`~Outstanding.due`). It never sees a message,
a socket or a clock, so every rule is checked without a broker.

The rules (``docs/protocol.md``, "End-to-end delivery"):

- a batch is **outstanding** from its first hand-over to the broker until its node's answer for
  its seq arrives: telemetry, an ``error`` naming the seq (a ``duplicate`` too), or a ``gap``
  that covers it. A broker may drop a batch it acknowledged (a crash before it saved its
  sessions, a restart without persistence, no session yet for the device): only this book,
  on the producer's side, makes delivery end to end;
- it is **due** again once ``policy.wait_s(k)`` has passed since it was last published
  (``k``: its re-sends after a timeout so far; the wait doubles from ``first_s`` up to
  ``cap_s``), if either its device has said nothing for ``first_s`` (a node busy learning the
  batches before it will answer it: a copy would only be answered ``duplicate``) or its node is
  known to be past it (it answered a later seq in order: the answer to this one was lost);
- a device whose status says it is offline (:meth:`~Outstanding.away`) gets no re-sends on a
  timeout: the broker queues its batches on its persistent session, and a producer publishes
  them all again when it announces itself online (so a node away for a while is not sent a
  copy of its backlog every few seconds);
- after ``max_resends`` re-sends on a timeout a batch is no longer due: it waits for an answer
  only. A re-send after a reconnect or a device's return (``timed_out=False``) restarts its wait
  and does not count toward that bound (those are bounded by the events behind them);
- an **abandoned** batch (a producer that no longer keeps its payload) is never published
  again, but stays outstanding: a late answer still answers it.

Publishing a seq twice is safe: a node learns each seq once and answers a copy ``duplicate``
(or holds it silently while an earlier seq is missing), so every re-send is idempotent.
"""

from __future__ import annotations

import math
from collections.abc import KeysView
from dataclasses import dataclass, field
from typing import Final

#: Defaults of :class:`ResendPolicy`: first re-send after 5 s, doubling to 60 s, 6 of them
#: (a batch nobody answers is published 7 times over 3 min 15 s, then waited for).
FIRST_S: Final = 5.0
CAP_S: Final = 60.0
MAX_RESENDS: Final = 6


@dataclass(frozen=True, slots=True)
class ResendPolicy:
    """When an unanswered batch is published again: ``first_s`` after a publish without an
    answer, the wait doubling after each re-send up to ``cap_s``, at most ``max_resends`` re-sends
    on a timeout. ``first_s`` is also how long a device must have been silent before its
    batches count as lost rather than queued behind the ones it is learning."""

    first_s: float = FIRST_S
    cap_s: float = CAP_S
    max_resends: int = MAX_RESENDS

    def __post_init__(self) -> None:
        if not (math.isfinite(self.first_s) and self.first_s > 0):
            raise ValueError(f"first_s must be a positive number of seconds, not {self.first_s!r}")
        if not (math.isfinite(self.cap_s) and self.cap_s >= self.first_s):
            raise ValueError(f"cap_s must be a number >= first_s, not {self.cap_s!r}")
        if isinstance(self.max_resends, bool) or self.max_resends < 0:
            raise ValueError(f"max_resends must be an integer >= 0, not {self.max_resends!r}")

    @classmethod
    def for_pace(cls, cadence_s: float, speed: float | None) -> ResendPolicy:
        """The policy of a stream paced at one event per ``cadence_s / speed`` wall seconds
        (``speed`` None: a closed loop): the first re-send waits at least one of those, so a
        node that keeps up, even late within its cadence, is never sent a copy; the defaults
        otherwise."""
        if speed is None:
            return cls()
        first_s = max(FIRST_S, cadence_s / speed)
        return cls(first_s=first_s, cap_s=max(CAP_S, first_s))

    def wait_s(self, resends: int) -> float:
        """Seconds without an answer before re-send number ``resends + 1``."""
        return min(self.cap_s, self.first_s * 2.0 ** min(resends, 64))

    @property
    def patience_s(self) -> float:
        """Seconds from a batch's first publish until its last re-send on a timeout (nothing
        heard from its device meanwhile)."""
        return sum(self.wait_s(k) for k in range(self.max_resends))


@dataclass(slots=True)
class Batch:
    """One outstanding batch: when it was last published, its re-sends on a timeout so far."""

    published_s: float
    resends: int = 0
    abandoned: bool = False


@dataclass(slots=True)
class DeviceBook:
    """One device: the highest seq handed over, its outstanding batches (by seq), the last time
    it answered anything (``heard_s``), the highest seq its node is known to be past, and
    whether its status says it is offline (``away``)."""

    highest_sent: int = 0
    batches: dict[int, Batch] = field(default_factory=dict)
    heard_s: float = -math.inf
    passed: int = 0
    away: bool = False

    @property
    def seqs(self) -> KeysView[int]:
        """The outstanding seqs (a live view, in no particular order)."""
        return self.batches.keys()


class Outstanding:
    """The outstanding batches of every device a producer publishes to; see the module
    docstring."""

    def __init__(self, policy: ResendPolicy | None = None) -> None:
        self.policy = policy or ResendPolicy()
        self.devices: dict[str, DeviceBook] = {}

    def book(self, device: str) -> DeviceBook:
        """``device``'s book (an empty one the first time it is named)."""
        book = self.devices.get(device)
        if book is None:
            book = self.devices[device] = DeviceBook()
        return book

    # -- what the producer did -----------------------------------------------------------------

    def sent(self, device: str, seq: int, now_s: float) -> bool:
        """``seq`` is handed to the broker for ``device`` at ``now_s``. True the first time (it
        is outstanding from now on); False for a seq handed over before (answered or not)."""
        if seq < 0:
            raise ValueError(f"seq must be >= 0, not {seq}")
        book = self.book(device)
        if seq <= book.highest_sent:
            return False
        book.highest_sent = seq
        book.batches[seq] = Batch(now_s)
        return True

    def resent(self, device: str, seq: int, now_s: float, *, timed_out: bool) -> bool:
        """``seq`` is about to be published again at ``now_s``: True if it is outstanding and
        not abandoned (go ahead; its wait restarts now, and counts as a re-send on a timeout
        when ``timed_out``), False otherwise (answered meanwhile: do not publish it)."""
        batch = self.book(device).batches.get(seq)
        if batch is None or batch.abandoned:
            return False
        batch.published_s = now_s
        if timed_out:
            batch.resends += 1
        return True

    def abandon(self, device: str, seq: int) -> None:
        """Never publish ``seq`` again (it stays outstanding until an answer comes)."""
        batch = self.book(device).batches.get(seq)
        if batch is not None:
            batch.abandoned = True

    # -- what the node answered ----------------------------------------------------------------

    def away(self, device: str, away: bool) -> None:
        """``device``'s status says it is offline (``away``) or online."""
        self.book(device).away = away

    def heard(self, device: str, now_s: float) -> None:
        """``device`` answered something at ``now_s``: it is alive and learning."""
        book = self.book(device)
        book.heard_s = max(book.heard_s, now_s)

    def answered(self, device: str, seq: int, now_s: float, *, in_order: bool) -> bool:
        """An answer of ``device`` for ``seq`` at ``now_s``: True if ``seq`` was outstanding
        (this is its answer), False if it was not (a second answer, or a seq never sent).
        ``in_order``: the answer shows the node has committed ``seq`` or gone past it
        (telemetry, ``duplicate``, ``stale_seq``), not just refused it on sight."""
        self.heard(device, now_s)
        book = self.book(device)
        if in_order:
            book.passed = max(book.passed, seq)
        return book.batches.pop(seq, None) is not None

    def gap(self, device: str, first: int, last: int, now_s: float) -> list[int]:
        """``device``'s node gave up ``first..last`` for good at ``now_s``: the outstanding seqs
        among them are answered (returned, in order)."""
        if first > last:
            raise ValueError(f"a gap needs first <= last, got {first}..{last}")
        self.heard(device, now_s)
        book = self.book(device)
        book.passed = max(book.passed, last)
        skipped = sorted(s for s in book.batches if first <= s <= last)
        for seq in skipped:
            del book.batches[seq]
        return skipped

    # -- what to do ----------------------------------------------------------------------------

    def due(self, now_s: float) -> dict[str, list[int]]:
        """The batches to publish again at ``now_s``, by device, in seq order (record each with
        :meth:`resent` when it goes)."""
        policy = self.policy
        out: dict[str, list[int]] = {}
        for device, book in self.devices.items():
            if not book.batches or book.away:
                continue
            quiet = now_s >= book.heard_s + policy.first_s
            seqs = [
                seq
                for seq, batch in book.batches.items()
                if not batch.abandoned
                and batch.resends < policy.max_resends
                and now_s >= batch.published_s + policy.wait_s(batch.resends)
                and (quiet or seq < book.passed)
            ]
            if seqs:
                out[device] = sorted(seqs)
        return out

    def unanswered(self) -> dict[str, list[int]]:
        """Every device's outstanding seqs, in order (devices with none left out)."""
        return {d: sorted(b.batches) for d, b in self.devices.items() if b.batches}

    def resendable(self, device: str) -> list[int]:
        """``device``'s outstanding seqs that may still be published, in order (a reconnect or
        the device's return publishes them all again)."""
        return sorted(s for s, b in self.book(device).batches.items() if not b.abandoned)

    @property
    def count(self) -> int:
        """Outstanding batches over every device."""
        return sum(len(b.batches) for b in self.devices.values())


__all__ = ["CAP_S", "FIRST_S", "MAX_RESENDS", "Batch", "DeviceBook", "Outstanding", "ResendPolicy"]
