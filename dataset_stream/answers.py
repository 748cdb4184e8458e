"""What a fleet answered to a producer's batches: decoded, checked, accounted.

The stream and the bridge subscribe to the ``telemetry``, ``error`` and ``status`` topics of the
devices they feed (:meth:`AnswerLedger.subscriptions`); :meth:`AnswerLedger.handle` takes each
message as it arrives. A message is acted on only if its topic is ``{prefix}/{device}/{kind}``
for one of those devices (for a ledger opened without a device list, any device it has handed
a batch to), it decodes into the typed message of its kind (:class:`Telemetry`,
:class:`ErrorMessage`, :class:`Status`) and its ``device`` field names the device of its topic;
anything else is counted and logged, never acted on. What an answer means (``docs/protocol.md``,
"Stream and monitor through broker outages"):

- ``telemetry`` for seq N: N was learned (``learned``);
- an ``error`` ``duplicate`` for N: N was learned before (``duplicates``; with ``learned``, the
  ``acked`` batches): the node had it already, its first answer was lost or the batch was
  published again;
- an ``error`` with a protocol code, ``stale_seq`` or ``internal`` (or any other node code) for
  N: N was refused (``rejected``);
- an ``error`` ``gap``: the seqs ``gap_first..gap_last`` never reached the node in time and were
  skipped: answered, counted as ``lost`` (a kind of rejection);
- an ``error`` ``energy_policy`` for N: the node's energy-aware policy chose not to learn N:
  answered, counted as ``policy_skipped`` (a kind of rejection, like ``lost``; neither learned
  nor refused in :class:`~dataset_stream.outcome.Delivery`, whose ``skipped`` it is);
- an ``error`` ``deferred`` for N: the node holds N for the sun (``defer-to-sun``): answered
  for now (no re-send), counted as ``deferred`` until its final answer comes -- its telemetry
  (or a ``duplicate``) moves it to ``learned``, an ``energy_policy`` drop to
  ``policy_skipped``; still held at the end, it is "deferred (not learned yet)";
- an ``error`` ``store_failed`` for N: the node could not commit N and will retry: not an answer;
- an ``error`` with an ``infer_seq`` (or a ``prediction``) answers an inference request, not a
  batch: inference is at most once and not accounted here (counted as ``infer``);
- a ``status``: whether the device is online (an offline device gets no re-sends on a
  timeout: its broker queues them); state ``error`` (its loop failed and is being restarted)
  is logged once per change. A live (not retained) online status that says the node connected
  again (the first status heard, one after an offline one, or a new ``online_since``; a node
  also publishes its status after every event, which is not a return) of a device with
  unanswered batches calls ``on_back``: the producer publishes them again.

Which batches are outstanding, and when they are due again, is the
:class:`~dataset_stream.outstanding.Outstanding` book's: the ledger hands it every publish and
every answer. Each seq is accounted once: a second answer to it (a redelivery, or the
``duplicate`` answer to a batch published again) only counts as ``repeated``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, KeysView, Sequence
from dataclasses import dataclass, field
from typing import Final

from dataset_stream.errors import ERROR_CODES, ForeignMessage, ProtocolError
from dataset_stream.outcome import Delivery
from dataset_stream.outstanding import DeviceBook, Outstanding
from dataset_stream.protocol import (
    NODE_ERROR_CODES,
    ErrorMessage,
    Status,
    Telemetry,
    read_node_message,
    topic,
    topic_filter,
)

log = logging.getLogger(__name__)

ANSWER_KINDS: Final = ("telemetry", "error")
STATUS_KIND: Final = "status"
DUPLICATE_CODE: Final = "duplicate"
NOT_AN_ANSWER_CODES: Final = frozenset({"store_failed"})
GAP_CODE: Final = "gap"
#: A batch the node's energy-aware policy did not learn (its seq consumed).
ENERGY_POLICY_CODE: Final = "energy_policy"
#: A batch the node holds for the sun: an interim answer, a final one follows.
DEFERRED_CODE: Final = "deferred"
#: Error codes that show the node has committed the seq or gone past it (it learns in order).
IN_ORDER_CODES: Final = frozenset(
    {DUPLICATE_CODE, "stale_seq", "internal", ENERGY_POLICY_CODE, DEFERRED_CODE}
)
#: Warnings per kind of ignored message before the rest are logged at debug level only.
WARNINGS_PER_KIND: Final = 5
#: Up to this many devices the stream subscribes to each one's topics, past it to wildcards.
PER_DEVICE_UP_TO: Final = 100


@dataclass(frozen=True, slots=True)
class IgnoredMessages:
    """Messages the stream received but did not act on.

    ``invalid``: not a valid message of its kind (JSON, schema); ``foreign``: not this stream's
    (a topic or ``device`` field of another device, an answer to a seq it never sent);
    ``repeated``: a second answer to a seq already answered; ``unattributed``: an ``error``
    naming no seq (the node could not read one); ``store_failed``: the node could not commit a
    batch and will retry it; ``infer``: an answer to an inference request, not to a batch.
    """

    invalid: int = 0
    foreign: int = 0
    repeated: int = 0
    unattributed: int = 0
    store_failed: int = 0
    infer: int = 0

    @property
    def total(self) -> int:
        return (
            self.invalid
            + self.foreign
            + self.repeated
            + self.unattributed
            + self.store_failed
            + self.infer
        )


@dataclass(slots=True)
class DeviceLedger:
    """One device: its outstanding batches (``book``, shared with the producer's
    :class:`~dataset_stream.outstanding.Outstanding`), its answers by kind, whether it is
    online. ``answered`` is set at every answer, ``heard_status`` once a status came (retained
    or live). ``node_last_seq``: the highest ``last_seq`` its node has said it committed (in a
    status, or a ``duplicate`` / ``stale_seq`` error), None while it said none. ``deferred``:
    the seqs answered ``deferred`` whose final answer has not come yet."""

    device: str
    book: DeviceBook
    learned: int = 0
    duplicates: int = 0
    refused: int = 0
    lost: int = 0
    policy_skipped: int = 0
    deferred: set[int] = field(default_factory=set)
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    online: asyncio.Event = field(default_factory=asyncio.Event)
    heard_status: asyncio.Event = field(default_factory=asyncio.Event)
    status: Status | None = None
    node_last_seq: int | None = None

    def said_last_seq(self, last_seq: int | None) -> None:
        """Its node said it committed up to ``last_seq`` (None: said nothing)."""
        if last_seq is not None and (self.node_last_seq is None or last_seq > self.node_last_seq):
            self.node_last_seq = last_seq

    @property
    def sent_seq(self) -> int:
        """The highest seq handed to the broker for this device."""
        return self.book.highest_sent

    @property
    def outstanding(self) -> KeysView[int]:
        """The seqs published and not answered yet (a live view)."""
        return self.book.seqs

    def delivery(self) -> Delivery:
        """This device's batches and what became of them."""
        unanswered = tuple(sorted(self.book.seqs))
        answered = self.learned + self.duplicates + self.refused + self.lost + self.policy_skipped
        sent = answered + len(self.deferred) + len(unanswered)
        return Delivery(
            planned=sent,
            sent=sent,
            learned=self.learned,
            duplicates=self.duplicates,
            refused=self.refused,
            lost=self.lost,
            unanswered={self.device: unanswered} if unanswered else {},
            skipped=self.policy_skipped,
            deferred=len(self.deferred),
        )


class AnswerLedger:
    """The answers of ``device_ids`` under ``prefix``; see the module docstring.

    ``device_ids`` None: the devices are the ones handed a batch (:meth:`handing_over`), and
    the subscriptions are wildcards. ``book``: the outstanding batches (a new book by
    default); ``clock``: seconds on a monotonic clock, the time of each answer.
    """

    def __init__(
        self,
        prefix: str,
        device_ids: Sequence[str] | None,
        *,
        book: Outstanding | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_answer: Callable[[], None] | None = None,
        on_back: Callable[[str], None] | None = None,
    ) -> None:
        self.prefix = prefix
        self.book = book if book is not None else Outstanding()
        self.clock = clock
        self.open = device_ids is None
        self.devices: dict[str, DeviceLedger] = {}
        for device in device_ids or ():
            self.track(device)
        self.on_answer = on_answer
        self.on_back = on_back
        self.acked = self.rejected = self.lost = self.duplicates = self.policy_skipped = 0
        self.deferred = 0  # answered ``deferred``, final answer still to come
        self._ignored = dict.fromkeys(IgnoredMessages.__dataclass_fields__, 0)
        self._unknown_codes: set[str] = set()

    def track(self, device: str) -> DeviceLedger:
        """``device``'s ledger (made the first time: its answers are acted on from now on)."""
        rec = self.devices.get(device)
        if rec is None:
            rec = self.devices[device] = DeviceLedger(device, self.book.book(device))
        return rec

    # -- what the producer sent --------------------------------------------------------------

    def subscriptions(self, *, with_status: bool) -> list[tuple[str, int]]:
        """``(topic filter, qos)`` of what the stream reads: its own devices' topics, or, for
        more than :data:`PER_DEVICE_UP_TO` devices (or an open ledger), one
        ``{prefix}/+/{kind}`` filter per kind (a broker such as amqtt matches every message
        against every filter, one by one); a message of another device is then counted as
        ``foreign``."""
        kinds = (*ANSWER_KINDS, STATUS_KIND) if with_status else ANSWER_KINDS
        if self.open or len(self.devices) > PER_DEVICE_UP_TO:
            return [(topic_filter(self.prefix, kind), 1) for kind in kinds]
        return [(topic(self.prefix, d, kind), 1) for d in self.devices for kind in kinds]

    def handing_over(self, device: str, seq: int) -> bool:
        """``seq`` is about to be published to ``device`` (its answer may beat the PUBACK).

        True the first time: ``seq`` is then outstanding until its answer comes. Publishing it
        again (after a reconnect) changes nothing here: an answered seq stays answered.
        """
        if device not in self.devices:
            if not self.open:
                raise KeyError(f"{device!r} is not a device of this ledger")
            self.track(device)
        return self.book.sent(device, seq, self.clock())

    def unanswered(self) -> dict[str, list[int]]:
        """Every device's published but unanswered seqs, in order."""
        return self.book.unanswered()

    @property
    def learned(self) -> int:
        """Batches answered with telemetry (``acked`` less the ``duplicates``)."""
        return self.acked - self.duplicates

    @property
    def ignored(self) -> IgnoredMessages:
        return IgnoredMessages(**self._ignored)

    def delivery(self, unsent: dict[str, tuple[int, ...]] | None = None) -> Delivery:
        """Every batch handed over and what became of it; ``unsent``: seqs meant for a device
        but never published (they make the planned total)."""
        unanswered = {d: tuple(s) for d, s in self.unanswered().items()}
        sent = self.acked + self.rejected + self.deferred + sum(map(len, unanswered.values()))
        missing = {d: s for d, s in (unsent or {}).items() if s}
        return Delivery(
            planned=sent + sum(map(len, missing.values())),
            sent=sent,
            learned=self.learned,
            duplicates=self.duplicates,
            refused=self.rejected - self.lost - self.policy_skipped,
            lost=self.lost,
            unanswered=unanswered,
            unsent=missing,
            skipped=self.policy_skipped,
            deferred=self.deferred,
        )

    # -- what the fleet answered -------------------------------------------------------------

    def handle(self, where: str, payload: object, *, retained: bool = False) -> None:
        """Account one received message (see the module docstring); never raises on bad input.

        ``retained``: the broker sent a stored message (on subscribing), not a live one.
        """
        try:
            device, message = read_node_message(self.prefix, where, payload)
        except ForeignMessage as exc:
            self._ignore("foreign", str(exc))
            return
        except ProtocolError as exc:
            self._ignore("invalid", f"{where}: {exc}")
            return
        rec = self.devices.get(device)
        if rec is None:
            self._ignore("foreign", f"a message on {where}, not a device this producer feeds")
        elif isinstance(message, Telemetry):
            if message.seq in rec.deferred:
                self._settle(rec, message.seq, "learned")
            else:
                self._account(rec, message.seq, "learned", in_order=True)
        elif isinstance(message, ErrorMessage):
            self._error(rec, message)
        elif isinstance(message, Status):
            self._status(rec, message, retained=retained)
        else:
            self._ignore("infer", f"{device}: prediction for inference request {message.seq}")

    def _error(self, rec: DeviceLedger, msg: ErrorMessage) -> None:
        rec.said_last_seq(msg.last_seq)
        if msg.answers_infer:
            self._ignore(
                "infer", f"{rec.device} refused inference request {msg.infer_seq}: {msg.code}"
            )
        elif msg.code == GAP_CODE:
            self._gap(rec, msg)
        elif msg.code in NOT_AN_ANSWER_CODES:
            self.book.heard(rec.device, self.clock())  # alive; it retries by itself
            self._ignore(
                "store_failed",
                f"{rec.device} could not store seq {msg.seq} ({msg.message}); it will retry",
            )
        elif msg.seq is None:
            self._ignore("unattributed", f"{rec.device}: {msg.code} without a seq: {msg.message}")
        elif msg.seq in rec.deferred and msg.code in (DUPLICATE_CODE, ENERGY_POLICY_CODE):
            self._settle(rec, msg.seq, "learned" if msg.code == DUPLICATE_CODE else "policy")
        else:
            kind = {
                DUPLICATE_CODE: "duplicate",
                ENERGY_POLICY_CODE: "policy",
                DEFERRED_CODE: "deferred",
            }.get(msg.code, "refused")
            if kind == "refused" and msg.seq in rec.outstanding:
                self._note_code(msg.code)
                log.info("%s rejected seq %d: %s: %s", rec.device, msg.seq, msg.code, msg.message)
            self._account(rec, msg.seq, kind, in_order=msg.code in IN_ORDER_CODES)

    def _gap(self, rec: DeviceLedger, msg: ErrorMessage) -> None:
        first, last = msg.gap_first, msg.gap_last
        if first is None or last is None or first > last:
            self._ignore("invalid", f"{rec.device}: a gap without a range ({first}..{last})")
            return
        skipped = self.book.gap(rec.device, first, last, self.clock())
        if not skipped:
            kind = "repeated" if last <= rec.sent_seq else "foreign"
            self._ignore(kind, f"{rec.device}: gap {first}..{last} answers nothing outstanding")
            return
        log.warning(
            "%s skipped seqs %d..%d (they did not arrive within its hold time): %d lost",
            rec.device,
            first,
            last,
            len(skipped),
        )
        self.rejected += len(skipped)
        self.lost += len(skipped)
        rec.lost += len(skipped)
        self._answered(rec)

    def _status(self, rec: DeviceLedger, msg: Status, *, retained: bool) -> None:
        before = rec.status
        if _returned(before, msg) and not retained and rec.outstanding and self.on_back:
            # a node publishes its status when it (re)connects: a batch sent while it had no
            # subscription (a broker restarted without persistence) never reached it
            self.on_back(rec.device)
        rec.status = msg
        rec.heard_status.set()
        rec.said_last_seq(msg.last_seq)
        (rec.online.set if msg.online else rec.online.clear)()
        self.book.away(rec.device, not msg.online)
        changed = before is None or (before.state, before.reason) != (msg.state, msg.reason)
        if msg.state == "error" and changed:
            log.warning("%s reports its loop failed and restarts: %s", rec.device, msg.reason)

    def _account(self, rec: DeviceLedger, seq: int, kind: str, *, in_order: bool) -> None:
        known = 0 < seq <= rec.sent_seq
        if self.book.answered(rec.device, seq, self.clock(), in_order=in_order and known):
            if kind == "learned":
                self.acked += 1
                rec.learned += 1
            elif kind == "duplicate":
                self.acked += 1
                self.duplicates += 1
                rec.duplicates += 1
            elif kind == "deferred":  # answered for now: its final answer is to come
                self.deferred += 1
                rec.deferred.add(seq)
            elif kind == "policy":  # answered, not learned, not a failure: a kind of rejection
                self.rejected += 1
                self.policy_skipped += 1
                rec.policy_skipped += 1
            else:
                self.rejected += 1
                rec.refused += 1
            self._answered(rec)
        elif known:
            self._ignore("repeated", f"{rec.device}: another answer to seq {seq}")
        else:
            self._ignore("foreign", f"{rec.device}: an answer to seq {seq}, never sent by us")

    def _settle(self, rec: DeviceLedger, seq: int, kind: str) -> None:
        """The final answer to ``seq``, answered ``deferred`` before: ``learned`` or
        ``policy`` (dropped for good)."""
        rec.deferred.discard(seq)
        self.deferred -= 1
        if kind == "learned":
            self.acked += 1
            rec.learned += 1
        else:
            self.rejected += 1
            self.policy_skipped += 1
            rec.policy_skipped += 1
        self._answered(rec)

    def _answered(self, rec: DeviceLedger) -> None:
        rec.answered.set()
        if self.on_answer is not None:
            self.on_answer()

    def _note_code(self, code: str) -> None:
        if code not in ERROR_CODES | NODE_ERROR_CODES and code not in self._unknown_codes:
            self._unknown_codes.add(code)
            log.warning("error code %r is not in the contract; counted as a rejection", code)

    def _ignore(self, kind: str, text: str) -> None:
        self._ignored[kind] += 1
        # an open ledger hears the whole fleet: another device's messages are expected there
        expected = ("repeated", "infer", "foreign") if self.open else ("repeated", "infer")
        quiet = kind in expected or self._ignored[kind] > WARNINGS_PER_KIND
        log.log(logging.DEBUG if quiet else logging.WARNING, "answers: ignoring %s", text)
        if self._ignored[kind] == WARNINGS_PER_KIND + 1 and kind not in expected:
            log.warning("answers: further %s messages are counted, not logged", kind)


def _returned(before: Status | None, now: Status) -> bool:
    """Whether status ``now`` says its node connected (again) since status ``before``."""
    if not now.online:
        return False
    if before is None or not before.online or now.online_since is None:
        return True
    return now.online_since != before.online_since


__all__ = ["PER_DEVICE_UP_TO", "AnswerLedger", "DeviceLedger", "IgnoredMessages"]
