"""One message to a node: decoded, validated, handled, answered, acknowledged.

:class:`Dispatcher` takes each message the node's connection delivers, one at a time (under the
node's lock), and never lets one stop the node:

- a message on a topic that is not this node's ``batch``, ``eval`` or ``infer`` is answered
  ``foreign_topic``;
- a payload the protocol refuses is answered with the protocol's code (and the ``seq``, or for
  an inference the ``infer_seq``, it carried);
- a valid batch goes to the :class:`~device.node.sequencer.Sequencer`, which learns it in order,
  holds it or refuses it, and acknowledges it itself;
- any other failure is answered ``internal``; the node goes on.

The downlink (docs/protocol.md, "The downlink"; :mod:`device.node.desired`): a message on
``desired`` is read (a retained one comes again on each connection: a version not newer than
the one in force is ignored) and kept pending for the next batch, or refused at once
(``bad_desired``); a pending state that names a pushed head makes the node follow that head's
topic (:data:`Follow`), and the head's bytes, when they come, are checked and kept for it.

Every message but a batch is acknowledged once handled. A lost connection or a stop is not
handled here: the message, unacknowledged, comes again.

Inference (docs/protocol.md, "Inference"): a request on ``infer`` is handled in turn with the
batches (same lock, same worker thread) but touches none of their delivery state: it is decoded,
classified, charged and committed by the engine, answered on ``prediction`` (or ``error`` with
``infer_seq``), then acknowledged. A repeat of a charged request is answered, not charged.

Injected faults (docs/faults.md; :mod:`device.node.faulting`): a batch whose simulated time makes
faults due has them published and carried out before it is handled; while a ``network`` fault
holds, each message first goes through its filter (delayed, lost -- acknowledged and dropped --,
handled twice, or after the next one).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final

import aiomqtt

from broker.errors import SubscriptionRefused
from broker.session import ack
from dataset_stream.protocol import (
    DesiredRefused,
    ErrorMessage,
    EvalRef,
    Prediction,
    ProtocolError,
    decode_batch,
    decode_eval,
    decode_infer,
    evalset_topic,
    is_eval_ref,
    parse_evalset_topic,
    parse_topic,
)
from dataset_stream.protocol.desired import head_topic, read_desired
from device.clock import Clock
from device.node.engine import NodeEngine
from device.node.evalsets import EvalBook, shared_sets
from device.node.faulting import NodeFaults
from device.node.inbox import INPUT_KINDS
from device.node.outbox import Outbox
from device.node.sequencer import Sequencer, TelemetryHook
from device.node.store import StoreError
from device.node.worker import finish_in_thread

log = logging.getLogger(__name__)

__all__ = ["EVAL_WAIT_S", "SHARED_FETCH_WAIT_S", "Dispatcher", "Follow"]

#: Seconds the batches that arrive after a reference to an eval set the node does not hold wait
#: for that set (so that the factory model and the first events are measured on it, as when the
#: set itself comes on the node's ``eval`` topic); then they are learned without it.
EVAL_WAIT_S: Final = 10.0

#: Seconds at most a node waits for another node of its process to fetch a shared eval set
#: (:class:`~device.node.evalsets.SharedSets`) before it subscribes to the set's topic itself:
#: half the batches' wait, so that its own fetch still fits in the rest.
SHARED_FETCH_WAIT_S: Final = EVAL_WAIT_S / 2

#: Subscribes the node's connection to one more topic (a pushed head's).
Follow = Callable[[str], Awaitable[None]]


class Dispatcher:
    """Handles a node's messages, one at a time under ``lock``; see the module docstring.

    What the node's connection needs besides :meth:`handle` goes through here too: the hold
    watcher of its batches, its status, and the start of a new connection.
    """

    def __init__(
        self,
        engine: NodeEngine,
        *,
        clock: Clock,
        lock: asyncio.Lock,
        on_telemetry: TelemetryHook | None = None,
        faults: NodeFaults | None = None,
    ) -> None:
        self._engine = engine
        self._faults = faults
        if faults is not None:
            faults.attach(engine)
            clock = faults.clock
        self._lock = lock
        self._settings = engine.settings
        self.device_id = engine.settings.device_id
        self._outbox = Outbox(engine)
        self._sequencer = Sequencer(
            engine, self._outbox, clock=clock, lock=lock, on_telemetry=on_telemetry
        )
        self._follow: Follow | None = None
        self._unfollow: Follow | None = None
        self._heads_prefix = f"{self._settings.prefix}/heads/"
        self._evals = EvalBook(engine.eval_path)
        # the shared set this node fetches for its process's nodes, and the fetch (another
        # node's) it waits for instead; the wait is watched beside the reader
        self._fetch: tuple[str, asyncio.Future[bytes | None]] | None = None
        self._awaited: tuple[str, asyncio.Future[bytes | None]] | None = None
        self._awaiting = asyncio.Event()

    def new_connection(self, follow: Follow | None = None, unfollow: Follow | None = None) -> None:
        """Held batches belong to the last connection; unacknowledged, they come again. Its
        statuses say when it was made. ``follow`` subscribes it to a pushed head's or a shared
        eval set's topic, ``unfollow`` ends that (a shared eval set the node has now)."""
        self._sequencer.reset()
        self._evals.release()  # unacknowledged: they come again on this connection
        self._awaited = None  # the retained reference comes again too
        self._outbox.connected()
        self._follow = follow
        self._unfollow = unfollow

    async def publish_reported(self, client: aiomqtt.Client) -> None:
        """The retained reported state, as in force (on each connection)."""
        async with self._lock:
            await self._outbox.reported(client)

    async def watch_holds(self, client: aiomqtt.Client) -> None:
        """Skip the gap before held batches that waited too long, and learn those held for a
        referenced eval set that did not come (runs beside the reader)."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._sequencer.watch_holds(client))
                group.create_task(self._watch_eval_wait(client))
                group.create_task(self._watch_shared_fetch(client))
        finally:  # the connection is over: the nodes waiting for this one's fetch go their way
            self._end_fetch(None)

    async def publish_status(
        self, client: aiomqtt.Client, state: str, reason: str | None = None
    ) -> None:
        await self._outbox.status(client, state, reason)

    async def handle(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        """One message: learned, held, or answered with an error; the node never stops here
        (an injected crash aside). An injected network fault may delay, drop, repeat or
        reorder it first."""
        faults = self._faults
        network = None if faults is None else faults.network()
        if faults is None or network is None:
            await self._handle(client, message)
            return
        deliveries, lost = network.admit(message)
        if lost is not None:  # lost past the transport: the broker is done with it
            ack(client, lost)
        for delivery in deliveries:
            if delivery.delay_s > 0:
                await faults.clock.sleep(delivery.delay_s)
            handed = _copy(delivery.message) if delivery.copy else delivery.message
            await self._handle(client, handed)

    async def _handle(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        where = str(message.topic)
        head = self._head_name(where)
        if head is not None:
            payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
            async with self._lock:
                await self._on_head(client, head, bytes(payload))
            ack(client, message)
            return
        shared = parse_evalset_topic(self._settings.prefix, where)
        if shared is not None:
            payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
            used = False
            async with self._lock:
                try:
                    used = await self._on_shared_eval(client, shared, bytes(payload))
                except (aiomqtt.MqttError, asyncio.CancelledError):
                    raise  # the connection is gone or we stop: the message comes again
                except Exception as exc:  # never let an eval set stop the node
                    await self._shared_eval_failed(client, shared, exc)
            ack(client, message)
            # got it for good: the set published again is not sent. Only once the set is
            # acknowledged: a broker that hands a session one message at a time (amqtt) answers
            # the unsubscription after that acknowledgement, or after its timeout (5 s)
            if used and self._unfollow is not None:
                await self._unfollow(evalset_topic(self._settings.prefix, shared))
            return
        try:
            device, kind = parse_topic(self._settings.prefix, where)
        except ProtocolError:
            device, kind = None, None
        if device != self.device_id or kind not in INPUT_KINDS:
            text = (
                f"message on {where[:200]!r}, which is not this node's batch, eval or infer topic"
            )
            await self._outbox.error(client, ErrorMessage(self.device_id, "foreign_topic", text))
            ack(client, message)
            return
        payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
        if kind == "batch" and self._evals.defer(message):
            return  # handled once the referenced eval set is in use (or the wait is over)
        async with self._lock:
            await self._input(client, message, kind, where, bytes(payload))

    async def _input(
        self, client: aiomqtt.Client, message: aiomqtt.Message, kind: str, where: str, raw: bytes
    ) -> None:
        """One of this node's inputs, handled under the lock (held by the caller), answered,
        acknowledged (a batch by the sequencer)."""
        try:
            if kind == "batch":
                await self._on_batch(client, message, raw)
                return  # the sequencer acknowledges (or holds) it
            if kind == "infer":
                await self._on_infer(client, raw)
            elif kind == "desired":
                await self._on_desired(client, where, raw)
            else:
                await self._on_eval(client, raw)
        except ProtocolError as exc:
            if kind == "infer":  # its seq is an inference seq, never a batch's
                rejected = ErrorMessage(self.device_id, exc.code, exc.message, infer_seq=exc.seq)
            else:
                rejected = ErrorMessage(self.device_id, exc.code, exc.message, seq=exc.seq)
            await self._outbox.error(client, rejected)
        except (aiomqtt.MqttError, asyncio.CancelledError):
            raise  # the connection is gone or we stop: the message comes again
        except Exception as exc:  # anything else: report it with a stable code, go on
            log.exception("%s: failed on a %s message", self.device_id, kind)
            failed = ErrorMessage(self.device_id, "internal", f"{type(exc).__name__}: {exc}")
            await self._outbox.error(client, failed)
        ack(client, message)

    async def _release_batches(self, client: aiomqtt.Client) -> None:
        """The batches held while a referenced eval set was on its way, in arrival order (the
        lock held by the caller)."""
        for message in self._evals.release():
            payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
            await self._input(client, message, "batch", str(message.topic), bytes(payload))

    async def _watch_eval_wait(self, client: aiomqtt.Client) -> None:
        """Learn the held batches without the referenced set when it has not come in time."""
        loop = asyncio.get_running_loop()
        while True:
            await self._evals.holding.wait()
            await asyncio.sleep(max(0.0, self._evals.deadline - loop.time()))
            async with self._lock:
                if self._evals.waiting and loop.time() >= self._evals.deadline:
                    log.warning("%s: no referenced eval set in time; learning on", self.device_id)
                    await self._release_batches(client)
                    self._end_fetch(None)  # the others need not wait for it any longer

    async def _watch_shared_fetch(self, client: aiomqtt.Client) -> None:
        """Use the shared eval set another node of the process fetched; or, when that fetch
        gave up or takes longer than :data:`SHARED_FETCH_WAIT_S`, fetch it as the only node
        would. Waits without the node's lock: its messages go on meanwhile."""
        loop = asyncio.get_running_loop()
        while True:
            await self._awaiting.wait()
            self._awaiting.clear()
            awaited = self._awaited
            if awaited is None:
                continue
            sha256, fetch = awaited
            payload: bytes | None = None
            wait_s = min(SHARED_FETCH_WAIT_S, max(0.0, self._evals.deadline - loop.time()))
            try:
                async with asyncio.timeout(wait_s):
                    payload = await asyncio.shield(fetch)  # the fetch is not this node's
            except TimeoutError:
                log.info("%s: shared eval set %s late; fetching it", self.device_id, sha256)
            async with self._lock:
                if self._awaited is not awaited:
                    continue  # superseded: another reference, or a new connection
                self._awaited = None
                wanted = self._evals.wanted
                if wanted is None or wanted.sha256 != sha256:
                    continue
                try:
                    if payload is not None and wanted.matches(payload):
                        await self._on_shared_eval(client, sha256, payload, followed=False)
                    else:
                        await self._fetch_set(client, sha256)
                except (aiomqtt.MqttError, asyncio.CancelledError):
                    raise  # the connection is gone or we stop: the reference comes again
                except Exception as exc:  # never let an eval set stop the node
                    await self._shared_eval_failed(client, sha256, exc)

    async def _shared_eval_failed(
        self, client: aiomqtt.Client, sha256: str, exc: Exception
    ) -> None:
        """A bug on the shared set ``sha256``: logged, answered ``internal``, the held batches
        learned without it."""
        log.error("%s: failed on shared eval set %s", self.device_id, sha256, exc_info=exc)
        text = f"{type(exc).__name__}: {exc}"
        await self._outbox.error(client, ErrorMessage(self.device_id, "internal", text))
        await self._release_batches(client)

    def _end_fetch(self, payload: bytes | None) -> None:
        """This node's fetch of a shared set is over: the set (verified) is left for the other
        nodes of the process, or (None) they are told to fetch it themselves."""
        fetch, self._fetch = self._fetch, None
        if fetch is None:
            return
        sha256, future = fetch
        if payload is not None:
            shared_sets().fetched(sha256, payload)
        else:
            shared_sets().abandon(sha256, future)

    async def _fetch_set(self, client: aiomqtt.Client, sha256: str) -> None:
        """Subscribe to the shared set ``sha256``'s topic (it comes retained), the process's
        fetch of it unless another node's is in progress (the lock held by the caller)."""
        assert self._follow is not None
        sets = shared_sets()
        if self._fetch is not None and self._fetch[0] != sha256:
            self._end_fetch(None)
        if self._fetch is None and sets.fetching(sha256) is None:
            self._fetch = (sha256, sets.claim(sha256))
        where = evalset_topic(self._settings.prefix, sha256)
        sets.subscriptions[sha256] += 1
        try:
            await self._follow(where)
        except TimeoutError:  # the retained reference comes again on the next connection
            log.warning("%s: no SUBACK for %s; tried again later", self.device_id, where)
            self._end_fetch(None)
        except SubscriptionRefused as exc:
            self._end_fetch(None)
            text = f"cannot subscribe to the shared eval set {where}: {exc}"
            await self._outbox.error(client, ErrorMessage(self.device_id, "internal", text))
            await self._release_batches(client)

    def _head_name(self, where: str) -> str | None:
        """The head named by ``where`` if it is a pushed head's topic, else None."""
        if not where.startswith(self._heads_prefix) or not where.endswith("/weights"):
            return None
        name = where[len(self._heads_prefix) : -len("/weights")]
        return name if name and "/" not in name else None

    async def _on_desired(self, client: aiomqtt.Client, where: str, raw: bytes) -> None:
        """A desired state: pending for the next batch (or refused, answered); a pushed head it
        names is followed."""
        engine = self._engine
        try:
            state = read_desired(self._settings.prefix, where, raw)
        except DesiredRefused as exc:
            engine.refuse_desired(exc)
        else:
            engine.offer_desired(state)
            await self._follow_head(state.version)
        await self._outbox.news(client)

    async def _follow_head(self, version: int) -> None:
        """Subscribe to the pushed head the pending desired state waits for, if any (its
        retained bytes come then); a subscription the broker refuses refuses the state, one it
        does not acknowledge in time leaves it pending (the retained desired state comes again
        on the next connection, and with it another try)."""
        wanted = self._engine.wanted_head()
        if wanted is None or self._follow is None:
            return
        where = head_topic(self._settings.prefix, wanted[0])
        try:
            await self._follow(where)
        except TimeoutError:
            log.warning("%s: no SUBACK for %s; tried again later", self.device_id, where)
        except SubscriptionRefused as exc:
            self._engine.refuse_desired(
                DesiredRefused(version, "settings.head", f"cannot subscribe to {where}: {exc}")
            )

    async def _on_head(self, client: aiomqtt.Client, name: str, raw: bytes) -> None:
        """A pushed head's bytes: checked and kept if the pending desired state wants them."""
        try:
            await finish_in_thread(self._engine.head_arrived, name, raw)
        except Exception as exc:  # never let a head stop the node
            log.exception("%s: failed on head %s", self.device_id, name)
            failed = ErrorMessage(self.device_id, "internal", f"{type(exc).__name__}: {exc}")
            await self._outbox.error(client, failed)
        await self._outbox.news(client)

    async def _on_batch(self, client: aiomqtt.Client, message: aiomqtt.Message, raw: bytes) -> None:
        model = self._engine.bundle
        batch = decode_batch(
            raw,
            limits=self._settings.limits,
            sample_shape=model.input_shape,
            dtype=model.input_dtype,
            num_classes=model.num_classes,
        )
        if self._faults is not None:
            for fault in self._faults.due(batch.t):
                await self._faults.fire(client, self._engine, fault, batch.seq)
        await self._sequencer.arrived(client, message, batch)

    async def _on_infer(self, client: aiomqtt.Client, raw: bytes) -> None:
        """Classify, charge and commit (the engine), then answer; the caller acknowledges.

        A charge the store cannot commit is not retried: nothing was charged or classified, the
        request is answered ``store_failed`` (with its ``infer_seq``) and dropped.
        """
        engine, outbox = self._engine, self._outbox
        model = engine.bundle
        request = decode_infer(
            raw,
            limits=self._settings.limits,
            sample_shape=model.input_shape,
            dtype=model.input_dtype,
        )
        try:
            answer = await finish_in_thread(engine.infer, request)
        except StoreError as exc:
            text = f"{exc}; the inference was not charged nor answered"
            error = ErrorMessage(self.device_id, "store_failed", text, infer_seq=request.seq)
            await outbox.error(client, error)
            return
        if isinstance(answer, Prediction):
            await outbox.prediction(client, answer)
            return
        await outbox.error(client, answer)
        if outbox.state != "depleted" and engine.depleted:
            await outbox.status(client, "depleted")

    async def _on_eval(self, client: aiomqtt.Client, raw: bytes) -> None:
        """The eval set itself, or a reference to a shared one (:mod:`device.node.evalsets`):
        a set is used at once; a reference to the set in use changes nothing but the factory
        measurement, one to another set makes the node use it from another node of the process
        (:func:`~device.node.evalsets.shared_sets`), wait for that node's fetch, or follow that
        set's topic."""
        if not is_eval_ref(raw):
            self._awaited = None
            self._end_fetch(None)
            try:
                await self._use_eval(client, raw)
            finally:
                await self._release_batches(client)
            return
        ref = EvalRef.from_json(raw)  # a ProtocolError is answered with its code
        self._awaited = None
        if not self._evals.referenced(ref):
            self._end_fetch(None)
            await self._measure_in_use(client)
            return
        if self._follow is None:
            return
        self._evals.hold_batches(asyncio.get_running_loop().time() + EVAL_WAIT_S)
        sets = shared_sets()
        known = sets.payload(ref.sha256)
        if known is not None and ref.matches(known):  # another node of the process fetched it
            try:
                await self._on_shared_eval(client, ref.sha256, known, followed=False)
            except (aiomqtt.MqttError, asyncio.CancelledError):
                raise  # the connection is gone or we stop: the reference comes again
            except Exception:  # answered ``internal`` by the caller; the batches go on
                await self._release_batches(client)
                raise
            return
        fetch = sets.fetching(ref.sha256)
        mine = self._fetch is not None and self._fetch[1] is fetch
        if fetch is not None and not mine:  # another node is fetching it: wait for that
            self._awaited = (ref.sha256, fetch)
            self._awaiting.set()
            return
        await self._fetch_set(client, ref.sha256)

    async def _on_shared_eval(
        self, client: aiomqtt.Client, sha256: str, raw: bytes, *, followed: bool = True
    ) -> bool:
        """A shared eval set: used if it is the one referenced and matches its digest; refused
        (``eval_mismatch``) if it does not match; ignored if not referenced. ``followed``: it
        came on the set's topic (else from another node of the process, never subscribed to);
        one that is used is then left for the process's other nodes. True when a followed set
        is done with (in use now, or refused for good): the caller stops following its topic."""
        verdict = self._evals.shared(sha256, raw)
        if verdict.mismatch is not None:
            log.warning("%s: %s", self.device_id, verdict.mismatch)
            error = ErrorMessage(self.device_id, "eval_mismatch", verdict.mismatch)
            await self._outbox.error(client, error)
            await self._release_batches(client)  # they do without it
            if followed:
                self._end_fetch(None)  # the others check it themselves
            return False
        if not verdict.use:
            return False
        try:
            await self._use_eval(client, raw, sha256)
        except ProtocolError as exc:  # the digest matched a payload that is not a good set
            rejected = ErrorMessage(self.device_id, exc.code, f"shared eval set: {exc.message}")
            await self._outbox.error(client, rejected)
            if followed:
                self._end_fetch(None)
            await self._release_batches(client)
            return followed  # that digest names a bad set for good: no use following it
        if followed:  # whoever's fetch it was, the set is here now
            self._fetch = None
            shared_sets().fetched(sha256, raw)
        await self._release_batches(client)
        return followed

    async def _use_eval(
        self, client: aiomqtt.Client, raw: bytes, sha256: str | None = None
    ) -> None:
        """Measure accuracy on the eval set ``raw`` from now on, kept in the state directory;
        before the first learned event, measure the factory model on it and publish that in the
        status (event 0 of the accuracy curve)."""
        engine = self._engine
        model = engine.bundle
        eval_set = decode_eval(
            raw,
            sample_shape=model.input_shape,
            dtype=model.input_dtype,
            num_classes=model.num_classes,
        )
        try:
            await finish_in_thread(engine.set_eval, eval_set, raw)
        except StoreError as exc:  # measured from memory all the same; the broker retains it
            text = f"eval set in use but not saved: {exc}"
            await self._outbox.error(client, ErrorMessage(self.device_id, "store_failed", text))
        self._evals.used(raw, sha256)
        await self._measure_in_use(client)

    async def _measure_in_use(self, client: aiomqtt.Client) -> None:
        """Before the first learned event, the factory model on the eval set, in the status.
        After it, in a node that has reported no accuracy yet (restarted with events learned),
        the head as it is, so that its status says the set is in use before the next event."""
        try:
            factory = await finish_in_thread(self._engine.measure_factory)
        except StoreError as exc:  # nothing committed: the next eval message measures it again
            text = f"factory accuracy measured but not saved: {exc}"
            await self._outbox.error(client, ErrorMessage(self.device_id, "store_failed", text))
            return
        if factory is not None:
            await self._outbox.measured_status(client, factory, factory=True)
        elif self._outbox.accuracy is None:
            now = await finish_in_thread(self._engine.evaluate)
            if now is not None:
                await self._outbox.measured_status(client, now, factory=False)


def _copy(message: aiomqtt.Message) -> aiomqtt.Message:
    """A second copy of ``message`` that is never acknowledged (the first one is): QoS 0."""
    return aiomqtt.Message(
        message.topic, message.payload, 0, message.retain, message.mid, message.properties
    )
