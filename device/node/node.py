"""``Node``: one emulated VEGA device on MQTT (async context manager).

Delivery (docs/protocol.md, "Delivery guarantees"): the node learns each batch exactly once and
in ``seq`` order. Its MQTT session is persistent (client id = device id, clean session off), so
QoS 1 batches queued while it was away arrive when it returns, and a batch is acknowledged only
once its event is committed: a node killed at any moment gets every unacknowledged batch again.
With a :class:`~device.fleet.gateway.Gateway` the node has no session of its own: it reads its
messages from the gateway's shared, equally persistent connection and acknowledges them there,
with the same guarantees (but no last will of its own).

- seq ``last + 1`` is learned; a later seq is *held*, unacknowledged, until the missing ones
  arrive or ``hold_s`` passes; then the missing range is committed as a gap, reported (``gap``
  error, ``gaps`` in telemetry and status) and learning goes on with the held batches;
- a seq already learned is acknowledged and answered with a ``duplicate`` error carrying it; a
  seq that was skipped as part of a gap gets ``stale_seq``;
- an event the store cannot commit (disk full, read-only) is *not* acknowledged: the node
  reports ``store_failed`` and status ``error``, and retries it with backoff until it commits;
- any other failure on a batch is reported (``internal``, with its seq), committed as a
  ``failed`` event so the seq is never applied later, and the node goes on.

The rules above are decided by a :class:`~device.node.delivery.SeqBook`, which does no I/O and
follows what the store committed; the node keeps the held messages, commits, publishes and
acknowledges, and times the hold on its ``clock`` (:mod:`device.clock`).

Inference (docs/protocol.md, "Inference"): a request on ``infer`` is handled in turn with the
batches (same lock, same worker thread) but touches none of their delivery state: it is decoded,
classified, charged and committed by the engine, answered on ``prediction`` (or ``error`` with
``infer_seq``), then acknowledged. A repeat of a charged request is answered, not charged.

Supervision: anything that still ends the session loop is logged at once with its traceback,
published as a retained status ``error`` with the reason on the next connection, and the loop
is restarted with backoff. Numeric work runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self, TypeVar

import aiomqtt

from broker.backoff import Backoff
from broker.errors import SubscriptionRefused
from broker.refusals import Refusals
from broker.session import ack, persistent_client, subscribe
from broker.url import BrokerURL
from dataset_stream.protocol import (
    Batch,
    ErrorMessage,
    Prediction,
    ProtocolError,
    Status,
    Telemetry,
    decode_batch,
    decode_eval,
    decode_infer,
    parse_topic,
    topic,
)
from device.aio import cancel_and_wait
from device.clock import Clock, SystemClock
from device.errors import NodeGaveUp
from device.model.bundle import ModelBundle
from device.model.frozen import FrozenStage
from device.node.delivery import (
    Duplicate,
    HeldCopy,
    Hold,
    Learn,
    SeqBook,
    Stale,
    TooFarAhead,
)
from device.node.engine import NodeEngine
from device.node.inbox import INPUT_KINDS, Inbox, SharedConnection
from device.node.settings import NodeSettings
from device.node.store import StoreError

log = logging.getLogger(__name__)

NETWORK_TIMEOUT_S = 10.0
STOP_GRACE_S = 5.0  # a clean stop waits this long for the message in hand
T = TypeVar("T")
TelemetryHook = Callable[[Telemetry], None]


class Node:
    """An emulated device: receives batches, learns, reports (``async with Node(...)``)."""

    def __init__(
        self,
        settings: NodeSettings,
        bundle: ModelBundle,
        broker: BrokerURL,
        *,
        frozen: FrozenStage | None = None,
        backoff: Backoff | None = None,
        on_telemetry: TelemetryHook | None = None,
        gateway: SharedConnection | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.gateway = (
            gateway  # a shared connection (device.fleet.gateway); else a session of its own
        )
        self.bundle = bundle
        self.broker = broker
        self.frozen = frozen or FrozenStage.shared(bundle)
        self.backoff = backoff or Backoff()
        self.on_telemetry = on_telemetry
        self.clock = clock or SystemClock()  # times the hold of early batches
        self.engine: NodeEngine | None = None
        self.connected = asyncio.Event()
        self.connections = 0
        self.failures = 0  # session loops that ended with an unexpected error
        self.failure: str | None = None  # the reason of the last one, until reported
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one event at a time
        self._stopping = False
        # the delivery rules decide (rebuilt from the committed last seq on each connection);
        # the node keeps the batches they hold, keyed by seq
        self._book = SeqBook(settings.delivery)
        self._held: dict[int, tuple[aiomqtt.Message, Batch]] = {}
        self._hold_changed = asyncio.Event()  # the book's hold deadline changed
        self._state = "idle"  # the last status published
        self._refusals = Refusals(settings.device_id, settings.connect.give_up_s, NodeGaveUp)
        self.gave_up: NodeGaveUp | None = None
        self.stopped = asyncio.Event()  # set when the node stops by itself (``gave_up``)

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self.engine = await asyncio.to_thread(NodeEngine, self.settings, self.bundle, self.frozen)
        self._task = asyncio.create_task(self._supervise(), name=f"node {self.device_id}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task, self._task = self._task, None
        self._stopping = True
        # a clean stop lets the message in hand finish: answered *and* acknowledged, so that
        # the broker does not hand it over again (holding the lock, no new one starts)
        in_hand_done = False
        if task is not None and not task.done():
            try:
                async with asyncio.timeout(STOP_GRACE_S):
                    await self._lock.acquire()
                in_hand_done = True
            except TimeoutError:
                log.warning(
                    "%s: the message in hand did not finish within %.0f s; stopping anyway",
                    self.device_id,
                    STOP_GRACE_S,
                )
        try:
            if task is not None:
                await cancel_and_wait(task)
            engine, self.engine = self.engine, None
            if engine is not None:
                if in_hand_done:
                    await asyncio.to_thread(engine.close)
                else:
                    async with self._lock:
                        await asyncio.to_thread(engine.close)
        finally:
            if in_hand_done:
                self._lock.release()

    @property
    def device_id(self) -> str:
        return self.settings.device_id

    def _topic(self, kind: str) -> str:
        return topic(self.settings.prefix, self.device_id, kind)

    # -- supervision -------------------------------------------------------------------------

    async def _supervise(self) -> None:
        """Run the session loop forever; a loop that dies is logged, reported and restarted."""
        backoff = Backoff(initial_s=1.0, cap_s=60.0)
        while True:
            connections = self.connections
            try:
                if self.gateway is None:
                    await self._session_loop()
                else:
                    await self._gateway_loop(self.gateway)
            except NodeGaveUp as exc:  # refused for good: the owner decides what happens
                log.error("%s", exc)
                self.gave_up = exc
                self.stopped.set()
                return
            except Exception as exc:  # the supervisor is the one place that sees everything
                self.failures += 1
                self.failure = f"{type(exc).__name__}: {exc}"[:1000]
                self.connected.clear()
                if self.connections > connections:
                    backoff.reset()  # it had worked: not a crash loop
                delay = backoff.next_delay()
                log.error(
                    "%s: node loop failed: %s; restarting in %.1f s",
                    self.device_id,
                    self.failure,
                    delay,
                    exc_info=exc,
                )
                await asyncio.sleep(delay)

    async def _session_loop(self) -> None:
        will = aiomqtt.Will(
            self._topic("status"),
            Status.offline(self.device_id).to_json(),
            qos=1,
            retain=True,
        )
        while True:
            client = persistent_client(self.broker, self.device_id, will, NETWORK_TIMEOUT_S)
            try:
                async with client:
                    await self._serve(client)
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                if self._stopping:
                    # leaving the client after a cancel can fail with MqttError, which would
                    # replace the CancelledError: the stop must still win over a reconnect
                    raise asyncio.CancelledError from exc
                delay = self.backoff.next_delay()
                now = asyncio.get_running_loop().time()
                self._refusals.failed(self.broker, exc, delay, now)
                await asyncio.sleep(delay)

    async def _gateway_loop(self, gateway: SharedConnection) -> None:
        """Serve on the gateway's connection; when it is lost, wait for the next one (the
        gateway reconnects; :meth:`Gateway.attach` raises ``NodeGaveUp`` if it gave up)."""
        while True:
            client, inbox = await gateway.attach(self.device_id)
            try:
                await self._serve(client, inbox)
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                if self._stopping:
                    raise asyncio.CancelledError from exc
                log.debug("%s: %s; waiting for the gateway", self.device_id, exc)

    async def _serve(self, client: aiomqtt.Client, inbox: Inbox | None = None) -> None:
        """Serve one connection: the node's own client, or a gateway's with ``inbox``."""
        self._refusals.clear()
        # held batches belong to the last connection; unacknowledged, they come again
        assert self.engine is not None
        self._held.clear()
        self._book = SeqBook(self.settings.delivery, last_seq=self.engine.last_seq)
        if inbox is None:  # a gateway subscribes for its nodes
            filters = [(self._topic(kind), 1) for kind in INPUT_KINDS]
            try:
                await subscribe(client, filters, within_s=NETWORK_TIMEOUT_S, broker=self.broker)
            except SubscriptionRefused as exc:  # its ACL: retrying cannot help, and a deaf
                raise NodeGaveUp(f"{self.device_id}: {exc}") from exc  # node is the worst kind
        self.backoff.reset()
        self.connections += 1
        reason, self.failure = self.failure, None
        await self._publish_status(client, "error" if reason else "idle", reason)
        self.connected.set()
        reader = asyncio.create_task(self._read(client, inbox), name=f"{self.device_id} reader")
        watcher = asyncio.create_task(self._watch_holds(client), name=f"{self.device_id} holds")
        try:
            await asyncio.wait({reader, watcher}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # a clean stop: say so (the will is for crashes)
            await _cancel_all(reader, watcher)
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                async with asyncio.timeout(2):
                    await self._publish_status(client, "offline")
            raise
        finally:
            self.connected.clear()
        await _cancel_all(reader, watcher)  # raises what ended the first one, if it failed
        raise aiomqtt.MqttError("message stream ended")

    async def _read(self, client: aiomqtt.Client, inbox: Inbox | None) -> None:
        async for message in client.messages if inbox is None else inbox:
            await self._handle(client, message)
            # An idle node must not keep its last batch alive (~150 KB each in a big fleet).
            del message

    # -- messages ----------------------------------------------------------------------------

    async def _handle(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        """One message: learned, held, or answered with an error; the node never stops here."""
        assert self.engine is not None
        where = str(message.topic)
        try:
            device, kind = parse_topic(self.settings.prefix, where)
        except ProtocolError:
            device, kind = None, None
        if device != self.device_id or kind not in INPUT_KINDS:
            text = (
                f"message on {where[:200]!r}, which is not this node's batch, eval or infer topic"
            )
            await self._publish_error(client, ErrorMessage(self.device_id, "foreign_topic", text))
            ack(client, message)
            return
        payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
        async with self._lock:
            try:
                if kind == "batch":
                    await self._on_batch(client, message, bytes(payload))
                    return  # _on_batch acknowledges (or holds) it
                if kind == "infer":
                    await self._on_infer(client, bytes(payload))
                else:
                    await self._on_eval(client, bytes(payload))
            except ProtocolError as exc:
                if kind == "infer":  # its seq is an inference seq, never a batch's
                    rejected = ErrorMessage(
                        self.device_id, exc.code, exc.message, infer_seq=exc.seq
                    )
                else:
                    rejected = ErrorMessage(self.device_id, exc.code, exc.message, seq=exc.seq)
                await self._publish_error(client, rejected)
            except (aiomqtt.MqttError, asyncio.CancelledError):
                raise  # the connection is gone or we stop: the message comes again
            except Exception as exc:  # anything else: report it with a stable code, go on
                log.exception("%s: failed on a %s message", self.device_id, kind)
                failed = ErrorMessage(self.device_id, "internal", f"{type(exc).__name__}: {exc}")
                await self._publish_error(client, failed)
        ack(client, message)

    async def _on_batch(self, client: aiomqtt.Client, message: aiomqtt.Message, raw: bytes) -> None:
        engine = self.engine
        assert engine is not None
        model = self.bundle
        batch = decode_batch(
            raw,
            limits=self.settings.limits,
            sample_shape=model.input_shape,
            dtype=model.input_dtype,
            num_classes=model.num_classes,
        )
        book, seq = self._book, batch.seq
        deadline_before = book.deadline_s
        try:
            # whether a seq at or below the last one was handled or skipped: the event log knows
            handled = book.is_past(seq) and await asyncio.to_thread(engine.has_event, seq)
            decision = book.arrived(seq, self.clock.monotonic_s(), handled=handled)
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
                    release = book.due(self.clock.monotonic_s())  # held too many: skip the gap
                    if release is not None:
                        await self._release(client, release)
                case HeldCopy():  # a second copy (a producer re-publishing): one is enough
                    ack(client, message)
                case Duplicate():
                    text = f"seq {seq} was learned before; not applied again"
                    await self._refuse(client, message, "duplicate", text, seq)
                case Stale():
                    text = f"seq {seq} arrived after it was skipped as a gap"
                    await self._refuse(client, message, "stale_seq", text, seq)
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

    async def _refuse(
        self, client: aiomqtt.Client, message: aiomqtt.Message, code: str, text: str, seq: int
    ) -> None:
        """Answer a batch that is not applied with an error carrying its seq; acknowledge it."""
        await self._publish_error(client, ErrorMessage(self.device_id, code, text, seq=seq))
        ack(client, message)

    async def _learn(self, client: aiomqtt.Client, message: aiomqtt.Message, batch: Batch) -> None:
        """Apply ``batch`` (it is next in order); commit, answer, then acknowledge it."""
        engine = self.engine
        assert engine is not None
        try:
            outcome = await self._commit(client, batch.seq, engine.apply, batch)
        except Exception as exc:  # the node cannot learn this batch: skip it, say so, go on
            log.exception("%s: failed on seq %d; skipping it", self.device_id, batch.seq)
            await self._commit(client, batch.seq, engine.skip, batch.seq, batch.t)
            text = f"{type(exc).__name__}: {exc}"
            await self._publish_error(
                client, ErrorMessage(self.device_id, "internal", text, seq=batch.seq)
            )
            ack(client, message)
            return
        telemetry = outcome.telemetry
        await client.publish(self._topic("telemetry"), telemetry.to_json(), qos=1)
        ack(client, message)
        state = "idle" if outcome.learned else "depleted"
        if self._state != state:
            await self._publish_status(client, state)
        if self.on_telemetry is not None:
            try:
                self.on_telemetry(telemetry)
            except Exception:  # the hook is the caller's code: its failure is not the batch's
                log.exception("%s: telemetry hook failed", self.device_id)

    async def _commit(
        self, client: aiomqtt.Client, seq: int, fn: Callable[..., T], *args: Any
    ) -> T:
        """Run ``fn(*args)`` in a thread; while the store refuses the commit, report and retry.

        Store failures (disk full, read-only, I/O) are retried forever with capped backoff: the
        batch stays unacknowledged and nothing after it is learned, so nothing is lost or
        reordered; the retained status says ``error`` meanwhile.
        """
        delivery = self.settings.delivery
        backoff = Backoff(initial_s=delivery.retry_initial_s, cap_s=delivery.retry_cap_s)
        failed_before = False
        while True:
            try:
                return await _finish_in_thread(fn, *args)
            except StoreError as exc:
                delay = backoff.next_delay()
                log.error(
                    "%s: cannot commit seq %d: %s; retry in %.1f s", self.device_id, seq, exc, delay
                )
                if not failed_before:  # one report per batch, not one per attempt
                    failed_before = True
                    text = f"{exc}; the batch is kept and retried until it commits"
                    error = ErrorMessage(self.device_id, "store_failed", text, seq=seq)
                    await self._publish_error(client, error)
                    await self._publish_status(client, "error", f"storage: {exc}")
                await asyncio.sleep(delay)

    async def _learn_run(
        self,
        client: aiomqtt.Client,
        decision: Learn,
        arrived: tuple[aiomqtt.Message, Batch] | None = None,
    ) -> None:
        """Carry out ``decision``: commit and report its gap, if any, then learn its seqs in
        order (``arrived`` is the batch in hand, if it is one of them; the others are held)."""
        engine = self.engine
        assert engine is not None
        gap = decision.gap
        if gap is not None:
            first_held = decision.seqs[0]
            await self._commit(client, gap.first, engine.record_gap, gap.first, gap.last)
            self._book.skipped(gap, self.clock.monotonic_s())
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
            await self._publish_error(client, error)
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
                    self._book.committed(seq, self.clock.monotonic_s())

    async def _watch_holds(self, client: aiomqtt.Client) -> None:
        """When held batches have waited ``hold_s`` (on the node's clock) for a missing seq,
        skip the gap."""
        clock = self.clock
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

    async def _release(self, client: aiomqtt.Client, release: Learn) -> None:
        """Give up on the missing seqs before the first held batch; learn on from there."""
        if release.gap is None and self._book.last_seq is None:
            log.info("%s: first batch is seq %d", self.device_id, release.seqs[0])
        await self._learn_run(client, release)

    async def _on_infer(self, client: aiomqtt.Client, raw: bytes) -> None:
        """Classify, charge and commit (the engine), then answer; the caller acknowledges.

        A charge the store cannot commit is not retried: nothing was charged or classified, the
        request is answered ``store_failed`` (with its ``infer_seq``) and dropped.
        """
        engine = self.engine
        assert engine is not None
        model = self.bundle
        request = decode_infer(
            raw,
            limits=self.settings.limits,
            sample_shape=model.input_shape,
            dtype=model.input_dtype,
        )
        try:
            answer = await _finish_in_thread(engine.infer, request)
        except StoreError as exc:
            text = f"{exc}; the inference was not charged nor answered"
            error = ErrorMessage(self.device_id, "store_failed", text, infer_seq=request.seq)
            await self._publish_error(client, error)
            return
        if isinstance(answer, Prediction):
            await client.publish(self._topic("prediction"), answer.to_json(), qos=1)
            return
        await self._publish_error(client, answer)
        if self._state != "depleted" and engine.depleted:
            await self._publish_status(client, "depleted")

    async def _on_eval(self, client: aiomqtt.Client, raw: bytes) -> None:
        engine = self.engine
        assert engine is not None
        model = self.bundle
        eval_set = decode_eval(
            raw,
            sample_shape=model.input_shape,
            dtype=model.input_dtype,
            num_classes=model.num_classes,
        )
        try:
            await _finish_in_thread(engine.set_eval, eval_set, raw)
        except StoreError as exc:  # measured from memory all the same; the broker retains it
            text = f"eval set in use but not saved: {exc}"
            await self._publish_error(client, ErrorMessage(self.device_id, "store_failed", text))

    # -- publishing --------------------------------------------------------------------------

    async def _publish_status(
        self, client: aiomqtt.Client, state: str, reason: str | None = None
    ) -> None:
        assert self.engine is not None
        status = self.engine.status(state, reason)
        if reason:
            log.warning("%s: status %s: %s", self.device_id, status.state, reason)
        await client.publish(self._topic("status"), status.to_json(), qos=1, retain=True)
        self._state = status.state

    async def _publish_error(self, client: aiomqtt.Client, error: ErrorMessage) -> None:
        log.warning("%s: %s: %s", self.device_id, error.code, error.message)
        await client.publish(self._topic("error"), error.to_json(), qos=1)


async def _cancel_all(*tasks: asyncio.Task[None]) -> None:
    """Cancel and await ``tasks``; then raise the first exception one of them ended with."""
    for task in tasks:
        if not task.done():
            await cancel_and_wait(task)
    for task in tasks:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error


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


async def _finish_in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn`` in a worker thread; if cancelled, wait for it before propagating.

    A thread cannot be interrupted: returning early would let the node close its state file
    while the event is still being written.
    """
    future = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait({future})
        raise


__all__ = ["Node", "TelemetryHook"]
