"""Batches learned in ``seq`` order, exactly once: the seq book's decisions carried out.

Delivery (docs/protocol.md, "Delivery guarantees"):

- seq ``last + 1`` is learned; a later seq is *held*, unacknowledged, until the missing ones
  arrive or ``hold_s`` passes; then the missing range is committed as a gap, reported (``gap``
  error, ``gaps`` in telemetry and status) and learning goes on with the held batches;
- a seq held for the sun (``defer-to-sun``) is acknowledged and answered ``deferred`` at once;
  its telemetry (or an ``energy_policy`` drop) follows when the sun comes; a copy of it is
  answered ``deferred`` again while it is held;
- a seq already learned is acknowledged and answered with a ``duplicate`` error carrying it; a
  seq that was skipped as part of a gap gets ``stale_seq``; both carry the node's ``last_seq``
  too, so a producer learns where the device's seqs continue;
- after every event it commits (learned, depleted or skipped as failed) the node publishes its
  retained status, so producers and monitors that subscribe later read its last seq and state;
- an event the store cannot commit (disk full, read-only) is *not* acknowledged: the node
  reports ``store_failed`` and status ``error``, and retries it with backoff until it commits;
- any other failure on a batch is reported (``internal``, with its seq), committed as a
  ``failed`` event so the seq is never applied later, and the node goes on.

The rules are decided by a :class:`~device.node.delivery.SeqBook`, which does no I/O and follows
what the store committed; the :class:`Sequencer` keeps the held messages, commits through the
engine, publishes, acknowledges a batch once its event is committed, and times the hold on the
node's ``clock`` (:mod:`device.clock`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import aiomqtt

from broker.backoff import Backoff
from broker.session import ack
from dataset_stream.protocol import Batch, ErrorMessage, ProtocolError, Telemetry
from device.aio import cancel_and_wait
from device.clock import Clock
from device.node.delivery import Duplicate, HeldCopy, Hold, Learn, SeqBook, Stale, TooFarAhead
from device.node.energy_policy import DEFERRED_CODE, POLICY_CODE
from device.node.engine import NodeEngine
from device.node.outbox import Outbox
from device.node.store import StoreError
from device.node.worker import finish_in_thread

log = logging.getLogger(__name__)

T = TypeVar("T")
TelemetryHook = Callable[[Telemetry], None]

__all__ = ["Sequencer", "TelemetryHook", "held_size_bytes"]


class Sequencer:
    """One node's batches, in order: learned, held, or refused with an error.

    ``lock`` serialises the node's events: the caller of :meth:`arrived` holds it, and the hold
    watcher takes it before it releases held batches. ``on_telemetry`` is called with the
    telemetry of each learned batch, after it was published and acknowledged.
    """

    def __init__(
        self,
        engine: NodeEngine,
        outbox: Outbox,
        *,
        clock: Clock,
        lock: asyncio.Lock,
        on_telemetry: TelemetryHook | None = None,
    ) -> None:
        self._engine = engine
        self._outbox = outbox
        self._clock = clock
        self._lock = lock
        self._on_telemetry = on_telemetry
        self._delivery = engine.settings.delivery
        self.device_id = engine.settings.device_id
        # the delivery rules decide; the sequencer keeps the batches they hold, keyed by seq
        self._book = SeqBook(self._delivery, last_seq=engine.last_seq)
        self._held: dict[int, tuple[aiomqtt.Message, Batch]] = {}
        self._hold_changed = asyncio.Event()  # the book's hold deadline changed

    def reset(self) -> None:
        """Start over from the committed last seq: on a new connection, the batches held on
        the last one are gone; unacknowledged, they come again."""
        self._held.clear()
        self._book = SeqBook(self._delivery, last_seq=self._engine.last_seq)

    async def arrived(self, client: aiomqtt.Client, message: aiomqtt.Message, batch: Batch) -> None:
        """A valid batch: learn it (and the held ones it lets through), hold it, or refuse it;
        acknowledged unless held. Raises :class:`ProtocolError` for a seq too far ahead."""
        engine, book, seq = self._engine, self._book, batch.seq
        deadline_before = book.deadline_s
        try:
            # whether a seq at or below the last one was handled or skipped: the event log knows
            handled = book.is_past(seq) and await asyncio.to_thread(engine.has_event, seq)
            decision = book.arrived(
                seq,
                self._clock.monotonic_s(),
                handled=handled,
                size_bytes=held_size_bytes(message, batch),
            )
            match decision:
                case Learn():
                    await self._learn_run(client, decision, (message, batch))
                case Hold():  # early: held, unacknowledged, until the gap fills or times out
                    self._held[seq] = (message, batch)
                    log.info(
                        "%s: holding seq %d until seq %d arrives",
                        self.device_id,
                        seq,
                        decision.waiting_for,
                    )
                    await self._release_over_budget(client)
                case HeldCopy():  # a second copy (a producer re-publishing): one is enough
                    ack(client, message)
                case Duplicate():
                    # a seq the energy policy skipped is answered as it was the first time
                    outcome = await asyncio.to_thread(engine.store.event_outcome, seq)
                    if outcome == "policy":
                        text = f"seq {seq} was not learned: the energy policy skipped it before"
                        code = POLICY_CODE
                    elif outcome == "deferred":  # still held: its final answer is to come
                        text = (
                            f"seq {seq} is held for the sun: learned when the harvest covers "
                            "the load"
                        )
                        code = DEFERRED_CODE
                    else:
                        text = f"seq {seq} was learned before; not applied again"
                        code = "duplicate"
                    await self._refuse(client, message, code, text, seq, book.last_seq)
                case Stale():
                    text = f"seq {seq} arrived after it was skipped as a gap"
                    await self._refuse(client, message, "stale_seq", text, seq, book.last_seq)
                case TooFarAhead():
                    raise ProtocolError(
                        "bad_metadata",
                        f"seq {seq} is more than {decision.max_seq_ahead} past the last seq "
                        f"{decision.last_seq}",
                        seq=seq,
                    )
        finally:
            if book.deadline_s != deadline_before:
                self._hold_changed.set()

    async def watch_holds(self, client: aiomqtt.Client) -> None:
        """When held batches have waited ``hold_s`` (on the node's clock) for a missing seq,
        skip the gap."""
        clock = self._clock
        while True:
            self._hold_changed.clear()
            deadline = self._book.deadline_s
            if deadline is None:
                await self._hold_changed.wait()
                continue
            if await _set_before(self._hold_changed, clock, deadline):
                continue
            if clock.monotonic_s() >= deadline:
                async with self._lock:
                    release = self._book.due(clock.monotonic_s())
                    if release is not None:
                        await self._release(client, release)

    async def _refuse(
        self,
        client: aiomqtt.Client,
        message: aiomqtt.Message,
        code: str,
        text: str,
        seq: int,
        last_seq: int | None,
    ) -> None:
        """Answer a batch that is not applied with an error carrying its seq and the node's
        ``last_seq``; acknowledge it."""
        error = ErrorMessage(self.device_id, code, text, seq=seq, last_seq=last_seq)
        await self._outbox.error(client, error)
        ack(client, message)

    async def _release_over_budget(self, client: aiomqtt.Client) -> None:
        """While the held batches are too many or too large, skip the gap before the lowest
        one and learn on: one release may free less than the batch just held (a small run
        before large ones), so it goes on until the book is within its budget again."""
        book = self._book
        while (release := book.due(self._clock.monotonic_s())) is not None:
            held_before = len(book.held)
            await self._release(client, release)
            if len(book.held) >= held_before:  # nothing committed: the next arrival tries again
                return

    async def _release(self, client: aiomqtt.Client, release: Learn) -> None:
        """Give up on the missing seqs before the first held batch; learn on from there."""
        if release.gap is None and self._book.last_seq is None:
            log.info("%s: first batch is seq %d", self.device_id, release.seqs[0])
        await self._learn_run(client, release)

    async def _learn_run(
        self,
        client: aiomqtt.Client,
        decision: Learn,
        arrived: tuple[aiomqtt.Message, Batch] | None = None,
    ) -> None:
        """Carry out ``decision``: commit and report its gap, if any, then learn its seqs in
        order (``arrived`` is the batch in hand, if it is one of them; the others are held)."""
        engine = self._engine
        gap = decision.gap
        if gap is not None:
            first_held = decision.seqs[0]
            await self._commit(client, gap.first, engine.record_gap, gap.first, gap.last)
            self._book.skipped(gap, self._clock.monotonic_s())
            text = f"seqs {gap.first}..{gap.last} never arrived; learning goes on with {first_held}"
            log.warning("%s: %s", self.device_id, text)
            error = ErrorMessage(
                self.device_id,
                "gap",
                text,
                gap_first=gap.first,
                gap_last=gap.last,
                next_seq=first_held,
            )
            await self._outbox.error(client, error)
        for seq in decision.seqs:
            if arrived is not None and arrived[1].seq == seq:
                message, batch = arrived
            else:
                message, batch = self._held[seq]
            try:
                await self._learn(client, message, batch)
            finally:  # committed, even if answering it failed: the book follows the store
                if engine.last_seq == seq:
                    self._held.pop(seq, None)
                    self._book.committed(seq, self._clock.monotonic_s())

    async def _learn(self, client: aiomqtt.Client, message: aiomqtt.Message, batch: Batch) -> None:
        """Apply ``batch`` (it is next in order); commit, answer, then acknowledge it."""
        engine, outbox = self._engine, self._outbox
        try:
            wire_bytes = _payload_bytes(message)
            outcome = await self._commit(client, batch.seq, engine.apply, batch, wire_bytes)
        except Exception as exc:  # the node cannot learn this batch: skip it, say so, go on
            log.exception("%s: failed on seq %d; skipping it", self.device_id, batch.seq)
            await self._commit(client, batch.seq, engine.skip, batch.seq, batch.t)
            text = f"{type(exc).__name__}: {exc}"
            await outbox.error(
                client, ErrorMessage(self.device_id, "internal", text, seq=batch.seq)
            )
            ack(client, message)
            await outbox.status(client, "idle")  # its last seq moved on
            await outbox.news(client)
            return
        telemetry = outcome.telemetry
        for earlier in outcome.held:  # batches held for the sun, learned before this one
            await outbox.telemetry(client, earlier)
        for dropped in outcome.dropped:  # held for the sun too long: dropped for good
            await outbox.error(client, dropped)
        if outcome.refusal is None:
            await outbox.telemetry(client, telemetry)
        else:  # the energy-aware policy did not learn it: answered, its seq consumed
            await outbox.error(client, outcome.refusal)
        ack(client, message)
        # after every event, not only on a change of state: the retained status is where
        # producers read the last seq and monitors the last state
        await outbox.status(client, "idle" if outcome.learned else "depleted", outcome.reason)
        await outbox.news(client)  # a desired state applied (or refused) before the event
        if self._on_telemetry is not None:
            for one in (*outcome.held, telemetry):
                try:
                    self._on_telemetry(one)
                except Exception:  # the hook is the caller's code: not the batch's failure
                    log.exception("%s: telemetry hook failed", self.device_id)

    async def _commit(
        self, client: aiomqtt.Client, seq: int, fn: Callable[..., T], *args: Any
    ) -> T:
        """Run ``fn(*args)`` in a thread; while the store refuses the commit, report and retry.

        Store failures (disk full, read-only, I/O) are retried forever with capped backoff: the
        batch stays unacknowledged and nothing after it is learned, so nothing is lost or
        reordered; the retained status says ``error`` meanwhile.
        """
        delivery = self._delivery
        backoff = Backoff(initial_s=delivery.retry_initial_s, cap_s=delivery.retry_cap_s)
        failed_before = False
        while True:
            try:
                return await finish_in_thread(fn, *args)
            except StoreError as exc:
                delay = backoff.next_delay()
                log.error(
                    "%s: cannot commit seq %d: %s; retry in %.1f s", self.device_id, seq, exc, delay
                )
                if not failed_before:  # one report per batch, not one per attempt
                    failed_before = True
                    text = f"{exc}; the batch is kept and retried until it commits"
                    error = ErrorMessage(self.device_id, "store_failed", text, seq=seq)
                    await self._outbox.error(client, error)
                    await self._outbox.status(client, "error", f"storage: {exc}")
                await asyncio.sleep(delay)


def _payload_bytes(message: aiomqtt.Message) -> int:
    """The size of ``message``'s payload as it came over the wire."""
    payload = message.payload
    return len(payload) if isinstance(payload, bytes | bytearray) else 0


def held_size_bytes(message: aiomqtt.Message, batch: Batch) -> int:
    """What a held batch keeps in memory: its wire payload and its decoded arrays."""
    wire = _payload_bytes(message)
    arrays = batch.x.nbytes + batch.y.nbytes + (0 if batch.ids is None else batch.ids.nbytes)
    return wire + arrays


async def _set_before(event: asyncio.Event, clock: Clock, deadline_s: float) -> bool:
    """Wait until ``event`` is set (``True``) or ``clock`` reaches ``deadline_s`` (``False``)."""
    setter = asyncio.ensure_future(event.wait())
    sleeper = asyncio.ensure_future(clock.sleep(deadline_s - clock.monotonic_s()))
    try:
        await asyncio.wait({setter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        return setter.done()
    finally:
        await cancel_and_wait(setter)
        await cancel_and_wait(sleeper)
