"""The paced publisher: a scenario's events for a fleet of devices, over MQTT, through outages.

``StreamPublisher`` connects on ``__aenter__`` and disconnects on ``__aexit__``; ``run()`` first
reads the devices' retained statuses (:mod:`dataset_stream.continuation`: each device continues
after its ``last_seq``, or from ``from_seq``; a run that would send seqs learned before, or finds
a device with no events left, is refused with :class:`SeqsRefused` before anything is sent),
then publishes the eval sets (QoS 1, retained): by default each distinct set once on its
content-addressed ``{prefix}/evalsets/{sha256}/set`` and a small reference to it on every
device's ``{prefix}/{id}/eval`` (:mod:`dataset_stream.protocol.evalref`; with
``eval_by_reference=False`` the whole set on every device's ``eval``), then
the learning events to ``{prefix}/{id}/batch`` (QoS 1): seq ``k`` is the scenario's event ``k``
(so two runs agree), from each device's ``first`` seq on, with simulated capture time
``t = t0 + (seq - first) * cadence_s`` (at ``speed=1`` that is the wall time it is sent at):

- paced (``speed=X``): event ``k`` of every device is published ``(k - 1) * cadence_s / X`` seconds
  after the start (``speed=1`` is real time); a late tick is published at once, never in a burst;
  with ``stagger``, each device is offset by its own :func:`phase` of a cadence (its batches'
  ``t`` too), so the fleet's events of a minute spread over the minute, as independent devices'
  would, instead of arriving at the same instant;
- closed loop (``speed=None``): a device's first event is published once the device is online
  (its retained ``status`` is there and not ``offline``: a batch sent to a device that never
  connected would be dropped by the broker, as it holds no session for it yet); its next event
  once the previous one is answered; each device has at most one event in flight.

The fleet's answers are accounted by an :class:`~dataset_stream.answers.AnswerLedger` (learned,
duplicate, refused, lost in a gap; foreign and invalid messages counted, never acted on). A
batch stays outstanding (:class:`~dataset_stream.outstanding.Outstanding`) until its node's
answer for its seq arrives; one without an answer in time is published again, with backoff, a
bounded number of times (:class:`~dataset_stream.outstanding.ResendPolicy`): a broker may drop
a batch it acknowledged (a crash before it saved its sessions, a restart without persistence,
a device that has no session yet), and only the producer can make delivery end to end. A node
learns each seq once, so every re-send is idempotent.

At the end (the last event published, or every closed loop done) ``run()`` drains: it waits up
to ``drain_timeout_s`` for the answers still outstanding, re-sending meanwhile, and returns a
:class:`~dataset_stream.payloads.StreamStats` whose ``delivery`` names every batch that got no
answer (time without a broker does not count toward the drain).

Broker outages (``docs/protocol.md``, "Stream and monitor through broker outages"): the session
is persistent (clean session off, a client id of its own per run unless one is given), so the
broker keeps the stream's subscriptions and queues the answers sent while it is away. When the
connection drops, ``run()`` reconnects in a loop with backoff (:class:`ReconnectPolicy`),
subscribes again, re-publishes every batch that has no answer yet (a node answers a seq it has
learned ``duplicate``; a device that announces itself online again gets its unanswered batches
once more, in case it lost its subscription), and goes on where it was: a paced stream keeps
its schedule, and the events whose time passed meanwhile are published at once and counted as
``late``; a closed loop waits and resumes.
An outage longer than ``max_outage_s`` ends the run with a :class:`PublishError`.

With ``infer_rate`` R (:mod:`dataset_stream.inference`), the interval before each learning event
but the first also carries unlabelled samples of that event to ``{prefix}/{id}/infer``, one
message per device per simulated second; batches then name their samples (``ids``). Paced, the
message of second ``k`` goes ``k / speed`` seconds after the previous batch; in the closed loop
the interval's messages go at once, right before the batch. Inference requests are at most once:
not accounted, not re-published after an outage (a closed loop that resumes an interval sends it
again with the same seqs, which a node answers without charging twice). On exit the
persistent session is ended, so nothing is left queued at the broker for this client id.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

import aiomqtt

from broker.errors import OutageTooLong, SubscriptionRefused
from broker.reconnect import describe
from broker.session import Session, close, new_client_id, publish
from dataset_stream.answers import AnswerLedger, DeviceLedger
from dataset_stream.continuation import ENDLESS_EVENTS, SeqPlan, plan_seqs
from dataset_stream.errors import PublishError, SeqsRefused
from dataset_stream.inference import InferSchedule
from dataset_stream.outstanding import Outstanding, ResendPolicy
from dataset_stream.pacing import Pacing
from dataset_stream.payloads import (
    LinkStats,
    ProgressCallback,
    StreamStats,
    batch_payload,
    eval_payload,
    eval_ref,
)
from dataset_stream.protocol import topic
from dataset_stream.protocol.topics import DEFAULT_PREFIX, validate_device_id
from dataset_stream.reconnect import ReconnectPolicy
from dataset_stream.redelivery import drain, resend_when_due
from dataset_stream.scenarios import Event, Scenario

if TYPE_CHECKING:
    from broker.url import BrokerURL

log = logging.getLogger(__name__)

#: Topic filters per SUBSCRIBE packet (three per device).
SUBSCRIBE_CHUNK: Final = 300
#: Seconds a stream waits at its start for the devices' retained statuses (it goes on as soon
#: as every device's has come).
STATUS_WAIT_S: Final = 2.0

#: Seconds at most the first batches wait for the devices just sent an eval set to report it in
#: use (:meth:`StreamPublisher._evals_taken`), and how often that is looked at.
EVAL_SETTLE_S: Final = 5.0
EVAL_SETTLE_POLL_S: Final = 0.05


def phase(device_id: str) -> float:
    """A device's own phase in ``[0, 1)`` of a cadence (``stagger``): from a hash of its id, so
    it does not depend on which stream sends to it, nor line up with the contiguous id ranges
    of a fleet's workers or shards (each of them gets an even share of every minute)."""
    digest = hashlib.blake2b(device_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class StreamPublisher:
    """Publish ``scenario`` to ``device_ids`` on ``broker``; see the module docstring.

    ``ack_timeout_s``: how long a closed loop waits for a device to come online, and for each
    answer, before it stops streaming to that device (``stalled``). ``drain_timeout_s``: how
    long ``run()`` waits at the end for the answers still outstanding (0: it returns after the
    last publish); None: ``ack_timeout_s`` with ``wait_for_answers``, else 0 (the command line
    passes :func:`~dataset_stream.outcome.default_drain_s`). ``resend``: when a batch without an
    answer is published again (default: :meth:`ResendPolicy.for_pace`). ``from_seq``: every
    device's first seq (None: each continues after the ``last_seq`` of its retained status,
    read for at most ``status_wait_s`` at the start); ``events``: at most this many per device.
    ``eval_by_reference``: each distinct eval set retained once and a reference per device (the
    broker's memory for them does not grow with the fleet); off: the set itself per device.
    """

    def __init__(
        self,
        broker: BrokerURL,
        scenario: Scenario | Mapping[str, Scenario],
        device_ids: Sequence[str],
        *,
        prefix: str = DEFAULT_PREFIX,
        cadence_s: float = 60.0,
        speed: float | None = 1.0,
        events: int | None = None,
        same_order: bool = False,
        t0: float | None = None,
        client_id: str | None = None,
        on_progress: ProgressCallback | None = None,
        timeout_s: float = 10.0,
        ack_timeout_s: float = 300.0,
        max_in_flight: int = 32,
        wait_for_answers: bool = False,
        reconnect: ReconnectPolicy | None = None,
        infer_rate: float = 0.0,
        stagger: bool = False,
        drain_timeout_s: float | None = None,
        resend: ResendPolicy | None = None,
        from_seq: int | None = None,
        status_wait_s: float = STATUS_WAIT_S,
        eval_by_reference: bool = True,
    ) -> None:
        if not device_ids or len(set(device_ids)) != len(device_ids):
            raise ValueError("device_ids must be a non-empty list of distinct ids")
        for device_id in device_ids:
            validate_device_id(device_id)
        topic(prefix, device_ids[0], "batch")  # validates the prefix
        self.pacing = Pacing(
            cadence_s=cadence_s, speed=speed, stagger=stagger, infer_per_s=infer_rate
        )
        if events is not None and events < 1:
            raise ValueError(f"events must be >= 1, not {events!r}")
        if from_seq is not None and from_seq < 1:
            raise ValueError(f"from_seq must be >= 1, not {from_seq!r}")
        if not (0 <= status_wait_s < float("inf")):
            raise ValueError(f"status_wait_s must be a number >= 0, not {status_wait_s!r}")
        if timeout_s <= 0 or ack_timeout_s <= 0 or max_in_flight < 1:
            raise ValueError("timeout_s, ack_timeout_s and max_in_flight must be positive")
        if client_id is not None and not client_id:
            raise ValueError("client_id must not be empty (None: one of its own per run)")
        if drain_timeout_s is None:
            drain_timeout_s = ack_timeout_s if wait_for_answers else 0.0
        if not (0 <= drain_timeout_s < float("inf")):
            raise ValueError(f"drain_timeout_s must be a number >= 0, not {drain_timeout_s!r}")
        self.drain_timeout_s = float(drain_timeout_s)
        self.infer = InferSchedule(infer_rate, cadence_s) if infer_rate else None
        self.infer_sent = 0
        self.broker = broker
        if isinstance(scenario, Mapping):  # a mixed fleet: each device its own scenario
            missing = [d for d in device_ids if d not in scenario]
            if missing:
                raise ValueError(f"no scenario for device {missing[0]!r}")
            self._scenario_of = {d: scenario[d] for d in device_ids}
        else:
            self._scenario_of = dict.fromkeys(device_ids, scenario)
        self.scenario = self._scenario_of[device_ids[0]]
        self.device_ids = list(device_ids)
        # each device's offset within a cadence, in simulated seconds (0 unless staggered)
        self._offset = {d: (phase(d) * cadence_s if stagger else 0.0) for d in self.device_ids}
        self.stagger = stagger
        self._by_offset = sorted(self.device_ids, key=self._offset.__getitem__)
        self.prefix = prefix
        self.cadence_s = float(cadence_s)
        self.speed = speed
        self.same_order = same_order
        self.t0 = t0
        self.client_id = client_id or new_client_id("stream")
        self.on_progress = on_progress
        self.timeout_s = timeout_s
        self.ack_timeout_s = ack_timeout_s
        self.reconnect = reconnect or ReconnectPolicy()
        self._mqtt = Session(broker, self.client_id, timeout_s=timeout_s)
        self._reconnect_loop = self.reconnect.reconnect(
            broker=broker, who="stream", client_id=self.client_id
        )
        fewest = min(s.num_events for s in self._scenario_of.values())
        self.events = events
        self.from_seq = from_seq
        self.status_wait_s = float(status_wait_s)
        self.plan: SeqPlan | None = None  # made at the start of run(), from the statuses
        # until then, what a run from seq 1 would send
        self.per_device = min(fewest, events or fewest)
        self._estimate = self.per_device * len(self.device_ids)
        self.book = Outstanding(resend or ResendPolicy.for_pace(cadence_s, speed))
        self.answers = AnswerLedger(
            prefix,
            self.device_ids,
            book=self.book,
            on_answer=self._progress,
            on_back=self._came_back,
        )
        self._any_answer = asyncio.Event()
        self._back: asyncio.Queue[str] = asyncio.Queue()  # devices to re-publish to
        self.sent = self.eval_sent = 0
        self.stalled: list[str] = []
        self._max_in_flight = max_in_flight
        self._sem = asyncio.Semaphore(max_in_flight)
        self._streams: dict[str, Sequence[Event]] = {}
        self._evals_done: set[str] = set()
        self.eval_by_reference = eval_by_reference
        self._evalsets_done: set[str] = set()  # digests of the shared sets published
        self.evalsets_sent = 0
        self._next_tick = 0  # paced: index of the next event to publish to every device
        self._start = 0.0  # paced: loop time of event 1
        self._t0 = 0.0
        self._client: aiomqtt.Client | None = None
        self._late = self._republished = self._resent = 0
        self._max_late_s = 0.0
        self._drained_s = 0.0  # seconds spent draining, over every connection

    @property
    def total(self) -> int:
        """Batches this run sends (before its plan is made: what a run from seq 1 would)."""
        return self._estimate if self.plan is None else self.plan.total

    def seqs_of(self, device_id: str) -> tuple[int, int]:
        """``(first, last)``: the seqs the run sends ``device_id`` (once planned)."""
        if self.plan is None:
            return (1, self.per_device)
        return self.plan.ranges[device_id]

    @property
    def acked(self) -> int:
        return self.answers.acked

    @property
    def rejected(self) -> int:
        return self.answers.rejected

    @property
    def link(self) -> LinkStats:
        return LinkStats(
            reconnects=self._reconnect_loop.reconnects,
            outage_s=self._reconnect_loop.outage_s,
            late=self._late,
            max_late_s=self._max_late_s,
            republished=self._republished,
            resent=self._resent,
        )

    # -- connection ------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            # a session left under this id (a run killed outright; a broker that makes the user
            # name the client id) would hand over its old answers: start from a clean one
            await self._mqtt.end()
            self._client = await self._connect()
        except (aiomqtt.MqttError, OSError) as exc:  # TimeoutError is an OSError
            raise PublishError(
                f"cannot connect to the broker at {self.broker}: {describe(exc)}"
            ) from exc
        except PublishError:  # connected but refused: leave no session behind
            with contextlib.suppress(aiomqtt.MqttError, OSError):
                await self._mqtt.end()
            raise
        self._reconnect_loop.connected()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        client, self._client = self._client, None
        if client is not None:
            await close(client, within_s=self.timeout_s)
        with contextlib.suppress(aiomqtt.MqttError, OSError):
            await self._mqtt.end()

    async def _connect(self) -> aiomqtt.Client:
        """A connected client on the stream's persistent session, subscribed to its answers."""
        try:
            return await self._mqtt.open(
                self.answers.subscriptions(with_status=True),
                chunk=SUBSCRIBE_CHUNK,
                pending_calls_threshold=self._max_in_flight + 1,  # we bound them ourselves
            )
        except SubscriptionRefused as exc:
            raise PublishError(str(exc)) from exc

    async def _reconnect(self, cause: BaseException) -> aiomqtt.Client:
        """Connect again, with backoff, until it works or the outage passes ``max_outage_s``."""
        try:
            return await self._reconnect_loop.again(self._connect, cause)
        except OutageTooLong as exc:
            last = exc.__cause__ or cause
            raise PublishError(f"{exc}: {describe(last)}") from last

    # -- the run ---------------------------------------------------------------------------------

    async def run(self) -> StreamStats:
        """Publish the eval sets, then every device's events; return what was delivered."""
        if self._client is None:
            raise RuntimeError("use 'async with StreamPublisher(...)' before run()")
        started = time.monotonic()
        self._t0 = time.time() if self.t0 is None else self.t0
        self._start = asyncio.get_running_loop().time()
        while True:
            client = self._client
            try:
                await self._session(client)
                break
            except aiomqtt.MqttError as exc:
                self._client = None
                await close(client, within_s=self.timeout_s)
                self._client = await self._reconnect(exc)
        unsent: dict[str, tuple[int, ...]] = {}
        for d, rec in self.answers.devices.items():
            first, last = self.seqs_of(d)
            if rec.sent_seq < last < ENDLESS_EVENTS:  # a run for ever plans no end to miss
                unsent[d] = tuple(range(max(rec.sent_seq + 1, first), last + 1))
        return StreamStats(
            devices=len(self.device_ids),
            total=self.total,
            sent=self.sent,
            acked=self.answers.acked,
            rejected=self.answers.rejected,
            eval_sent=self.eval_sent,
            elapsed_s=time.monotonic() - started,
            stalled=tuple(sorted(set(self.stalled))),
            lost=self.answers.lost,
            link=self.link,
            ignored=self.answers.ignored,
            infer_sent=self.infer_sent,
            duplicates=self.answers.duplicates,
            delivery=self.answers.delivery(unsent),
            drain_s=self._drained_s,
            plan=self.plan,
        )

    async def _session(self, client: aiomqtt.Client) -> None:
        """The run on one connection; raises ``MqttError`` when the connection is lost."""
        while not self._back.empty():  # _republish covers them
            self._back.get_nowait()
        try:
            async with asyncio.TaskGroup() as group:
                helpers = [
                    group.create_task(self._read_answers(client)),
                    group.create_task(self._resend_to_returning(client)),
                    group.create_task(
                        resend_when_due(
                            self.book,
                            lambda due: self._publish_again(client, due, "timeout"),
                            skip=self.stalled.__contains__,
                        )
                    ),
                ]
                await self._work(client)
                for helper in helpers:
                    helper.cancel()
        except BaseExceptionGroup as group:
            essential = _essential(group)
            raise essential from essential.__cause__  # keeps aiomqtt's reason as the cause

    async def _read_answers(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            self.answers.handle(message.topic.value, message.payload, retained=message.retain)

    async def _work(self, client: aiomqtt.Client) -> None:
        if self.plan is None:
            await self._plan()
        await self._evals_taken(await self._publish_evals(client))
        await self._republish(client)
        if self.speed is None:
            async with asyncio.TaskGroup() as devices:
                for device_id in self.device_ids:
                    if device_id not in self.stalled:
                        devices.create_task(self._closed_loop(client, device_id))
        else:
            await self._paced(client, self.cadence_s / self.speed)
        await self._drain()

    # -- where each device's seqs continue ------------------------------------------------------

    async def _plan(self) -> None:
        """Read the devices' retained statuses (subscribed already; at most ``status_wait_s``,
        less once every device's has come) and plan the seqs of the run; refuse it
        (:class:`SeqsRefused`) when it would send seqs learned before or a device has no events
        left. The schedule (``t0``, the paced start) begins once this is done."""
        devices = self.answers.devices
        try:
            async with asyncio.timeout(self.status_wait_s):
                for rec in devices.values():
                    await rec.heard_status.wait()
        except TimeoutError:
            silent = [d for d, rec in devices.items() if rec.status is None]
            log.warning(
                "%d device(s) sent no status within %.1f s (%s%s): they start at seq %s",
                len(silent),
                self.status_wait_s,
                ", ".join(silent[:5]),
                ", ..." if len(silent) > 5 else "",
                self.from_seq or 1,
            )
        last_seqs = {
            d: rec.status.last_seq if rec.status is not None else None for d, rec in devices.items()
        }
        available = {d: s.num_events for d, s in self._scenario_of.items()}
        plan = plan_seqs(last_seqs, available, events=self.events, from_seq=self.from_seq)
        if plan.refused:
            raise SeqsRefused(plan.refusal_line())
        self.plan = plan
        self.per_device = max(last - first + 1 for first, last in plan.ranges.values())
        if plan.continued:
            log.info("%d device(s) continue after their last seq", len(plan.continued))
        if plan.short:
            scenario_of = self._scenario_of
            label = lambda d: f"{scenario_of[d].source} / {scenario_of[d].name}"  # noqa: E731
            log.warning("%s", plan.short_line(label))
        self._t0 = time.time() if self.t0 is None else self.t0
        self._start = asyncio.get_running_loop().time()
        self._progress()

    def _t0_of(self, device_id: str) -> float:
        """The ``t0`` of ``batch_payload`` for ``device_id``: its first seq of this run is
        captured at the run's start (plus its offset), the next ones a cadence apart."""
        first, _ = self.seqs_of(device_id)
        return self._t0 + self._offset[device_id] - (first - 1) * self.cadence_s

    # -- publishing ------------------------------------------------------------------------------

    def _event(self, device_id: str, seq: int) -> Event:
        """Event ``seq`` of ``device_id``'s stream (seq ``k`` is event ``k`` of the scenario)."""
        stream = self._streams.get(device_id)
        if stream is None:
            scenario = self._scenario_of[device_id]
            stream = scenario.events(device_id, self.same_order)
            self._streams[device_id] = stream
        return stream[seq - 1]

    async def _evals_taken(self, devices: list[str]) -> None:
        """Before the first batches, wait (at most :data:`EVAL_SETTLE_S`) until each of
        ``devices`` reports an accuracy in its status: its eval set is in use. A node holds the
        batches that come before a set it was told about, unacknowledged; a broker that hands a
        session one message at a time (the embedded one) then sends the set only once its wait
        for that acknowledgement times out, seconds later. Only references are waited for (a
        whole set is used as it comes), and only devices heard online when it was sent; one
        that never reports a set in use (it cannot use it) only costs the wait."""

        def waiting(rec: DeviceLedger) -> bool:
            now = rec.status
            return now is not None and now.state != "offline" and now.accuracy is None

        if not self.eval_by_reference:
            return
        known = [self.answers.devices[d] for d in devices if d in self.answers.devices]
        pending = [r for r in known if waiting(r)]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + EVAL_SETTLE_S
        while loop.time() < deadline:
            pending = [r for r in pending if waiting(r)]
            if not pending:
                return
            await asyncio.sleep(EVAL_SETTLE_POLL_S)
        log.info("%d device(s) report no eval set in use yet; streaming on", len(pending))

    async def _publish_evals(self, client: aiomqtt.Client) -> list[str]:
        """Each device's eval set, retained: by reference (each distinct set once on its
        content-addressed topic, before the references that name it) or, with
        ``eval_by_reference`` off, the whole set on every device's ``eval`` topic; the devices
        it was published for now."""
        todo = [d for d in self.device_ids if d not in self._evals_done]
        if not todo:
            return todo
        scenarios = {id(self._scenario_of[d]): self._scenario_of[d] for d in todo}
        payloads = {
            key: await asyncio.to_thread(eval_payload, scenario)
            for key, scenario in scenarios.items()
        }
        per_device = payloads
        if self.eval_by_reference:
            per_device = {}
            for key, payload in payloads.items():
                ref = eval_ref(scenarios[key], payload)
                if ref.sha256 not in self._evalsets_done:
                    where = ref.topic(self.prefix)
                    await publish(client, where, payload, retain=True, timeout_s=self.timeout_s)
                    self._evalsets_done.add(ref.sha256)
                    self.evalsets_sent += 1
                per_device[key] = ref.to_json()

        async def one(device_id: str) -> None:
            payload = per_device[id(self._scenario_of[device_id])]
            async with self._sem:
                where = topic(self.prefix, device_id, "eval")
                await publish(client, where, payload, retain=True, timeout_s=self.timeout_s)
            self._evals_done.add(device_id)
            self.eval_sent += 1

        async with asyncio.TaskGroup() as group:
            for device_id in todo:
                group.create_task(one(device_id))
        return todo

    async def _publish_batch(
        self,
        client: aiomqtt.Client,
        device_id: str,
        event: Event,
        cache: dict[tuple[int, int, float], bytes] | None = None,
        due: float | None = None,
        again: str | None = None,
    ) -> bool:
        """Encode and publish one batch; the semaphore bounds payloads held in memory.

        ``again``: None for its first publish, else why it goes again (``timeout``: no answer
        in time; ``reconnect``, ``back``: a new connection, its device back online), and then
        only while it has no answer (False if it got one meanwhile). ``due``: the loop time the
        event was scheduled for (paced mode), to account it as late.
        """
        book = self.answers.devices[device_id].book
        if again is not None and event.seq not in book.batches:
            return False  # answered since it was found due
        async with self._sem:
            t0 = self._t0_of(device_id)
            key = (id(event.indices), event.seq, t0)
            payload = cache.get(key) if cache is not None else None
            if payload is None:
                payload = await asyncio.to_thread(
                    batch_payload,
                    self._scenario_of[device_id],
                    event,
                    t0=t0,
                    cadence_s=self.cadence_s,
                    with_ids=self.infer is not None,
                )
                if cache is not None:
                    cache[key] = payload
            # before publishing: the answer may beat the PUBACK
            if again is None:
                if not self.answers.handing_over(device_id, event.seq):
                    return False  # published before
                self.sent += 1
                connected_at = self._reconnect_loop.connected_at
                if due is not None and self._reconnect_loop.reconnects and due < connected_at:
                    self._late += 1  # its time passed while the stream had no broker
                    late_s = asyncio.get_running_loop().time() - due
                    self._max_late_s = max(self._max_late_s, late_s)
            elif not self.book.resent(
                device_id, event.seq, time.monotonic(), timed_out=again == "timeout"
            ):
                return False  # answered while it waited here
            where = topic(self.prefix, device_id, "batch")
            await publish(client, where, payload, timeout_s=self.timeout_s)
        if again == "timeout":
            self._resent += 1
        elif again is not None:
            self._republished += 1
        self._progress()
        return True

    def _infer_payloads(self, device_id: str, seq: int) -> list[tuple[int, bytes]]:
        """``(k, payload)`` of the inference requests before event ``seq`` of ``device_id``."""
        assert self.infer is not None
        t_start = self._t0_of(device_id) + (seq - 2) * self.cadence_s  # the previous event's
        event = self._event(device_id, seq)
        return self.infer.payloads(self._scenario_of[device_id], event, t_start=t_start)

    async def _publish_infer(self, client: aiomqtt.Client, device_id: str, payload: bytes) -> None:
        async with self._sem:
            where = topic(self.prefix, device_id, "infer")
            await publish(client, where, payload, timeout_s=self.timeout_s)
        self.infer_sent += 1

    async def _paced_infers(self, client: aiomqtt.Client, tick: int, start: float) -> None:
        """Paced: the interval before the run's event ``tick`` (0 is the first) of every device,
        which starts at loop time ``start``."""
        assert self.infer is not None and self.speed is not None
        loop = asyncio.get_running_loop()
        devices = [
            d
            for d in self.device_ids
            if d not in self.stalled and self.seqs_of(d)[0] + tick <= self.seqs_of(d)[1]
        ]
        plans = {d: self._infer_payloads(d, self.seqs_of(d)[0] + tick) for d in devices}
        for m, (k, _) in enumerate(self.infer.seconds):
            await asyncio.sleep(max(0.0, start + k / self.speed - loop.time()))
            async with asyncio.TaskGroup() as group:
                for device_id in devices:
                    group.create_task(
                        self._publish_infer(client, device_id, plans[device_id][m][1])
                    )

    async def _republish(self, client: aiomqtt.Client) -> None:
        """After a reconnect: publish again every batch that has no answer (the node de-dups)."""
        pending = {
            d: seqs
            for d in self.device_ids
            if d not in self.stalled and (seqs := self.book.resendable(d))
        }
        if not pending:
            return
        count = sum(map(len, pending.values()))
        log.warning("re-publishing %d unanswered batch(es) to %d device(s)", count, len(pending))
        await self._publish_again(client, pending, "reconnect")

    async def _publish_again(
        self, client: aiomqtt.Client, pending: Mapping[str, Sequence[int]], why: str
    ) -> None:
        """Publish ``pending`` seqs again, each device's in order (so a node need not hold any
        of them), the devices side by side."""

        async def one(device_id: str, seqs: Sequence[int]) -> None:
            for seq in seqs:
                event = self._event(device_id, seq)
                await self._publish_batch(client, device_id, event, again=why)

        async with asyncio.TaskGroup() as group:
            for device_id, seqs in pending.items():
                group.create_task(one(device_id, seqs))

    def _came_back(self, device_id: str) -> None:
        self._back.put_nowait(device_id)

    async def _resend_to_returning(self, client: aiomqtt.Client) -> None:
        """A device announced itself online with batches unanswered: it may have missed them
        (a broker without persistence forgets its subscription), so publish them again."""
        while True:
            device_id = await self._back.get()
            seqs = self.book.resendable(device_id)
            if device_id in self.stalled or not seqs:
                continue
            log.warning("%s is back: re-publishing %d unanswered batch(es)", device_id, len(seqs))
            await self._publish_again(client, {device_id: seqs}, "back")

    async def _paced(self, client: aiomqtt.Client, period_s: float) -> None:
        loop = asyncio.get_running_loop()
        while self._next_tick < self.per_device:
            tick = self._next_tick
            due = self._start + tick * period_s
            await asyncio.sleep(max(0.0, due - loop.time()))
            # devices sharing an event (--same-order) and an offset share its bytes
            cache: dict[tuple[int, int, float], bytes] = {}
            async with asyncio.TaskGroup() as group:
                for device_id in self._by_offset:
                    mine = due + self._offset[device_id] * period_s / self.cadence_s
                    first, last = self.seqs_of(device_id)
                    seq = first + tick
                    if seq > last:
                        continue  # fewer events left for this device
                    if mine > loop.time():
                        await asyncio.sleep(mine - loop.time())
                    if self.answers.devices[device_id].sent_seq < seq:  # else: re-published
                        event = self._event(device_id, seq)
                        task = self._publish_batch(client, device_id, event, cache, mine)
                        group.create_task(task)
            self._next_tick = tick + 1
            if self.infer is not None and tick + 1 < self.per_device:
                await self._paced_infers(client, tick + 1, due)

    async def _drain(self) -> None:
        """Wait until every published batch is answered, up to ``drain_timeout_s`` in all
        (time without a broker does not count: a reconnect comes back here for the rest)."""
        remaining_s = self.drain_timeout_s - self._drained_s
        if self.book.count and remaining_s > 0:
            started = time.monotonic()
            try:
                await drain(self.book, self._any_answer, remaining_s)
            finally:
                self._drained_s += time.monotonic() - started
        if self.book.count and self.drain_timeout_s > 0:
            late = sorted(self.answers.unanswered())
            log.warning(
                "no answer from %d device(s) within %.0f s of the end: %s",
                len(late),
                self.drain_timeout_s,
                ", ".join(late[:10]) + (", ..." if len(late) > 10 else ""),
            )
            self.stalled.extend(d for d in late if d not in self.stalled)

    async def _answered(self, device_id: str) -> None:
        """Until ``device_id`` has no unanswered batch."""
        rec = self.answers.devices[device_id]
        while rec.outstanding:
            rec.answered.clear()
            await rec.answered.wait()

    async def _closed_loop(self, client: aiomqtt.Client, device_id: str) -> None:
        rec = self.answers.devices[device_id]
        if rec.sent_seq == 0:
            try:
                async with asyncio.timeout(self.ack_timeout_s):
                    await rec.online.wait()
            except TimeoutError:
                log.warning(
                    "%s did not come online within %.0f s; not streaming to it",
                    device_id,
                    self.ack_timeout_s,
                )
                self.stalled.append(device_id)
                return
        while True:
            try:
                async with asyncio.timeout(self.ack_timeout_s):
                    await self._answered(device_id)
            except TimeoutError:
                log.warning(
                    "%s did not answer seq %s within %.0f s; stopping its stream",
                    device_id,
                    ", ".join(map(str, sorted(rec.outstanding))),
                    self.ack_timeout_s,
                )
                self.stalled.append(device_id)
                return
            first, last = self.seqs_of(device_id)
            if rec.sent_seq >= last:
                return
            seq = max(rec.sent_seq + 1, first)
            if self.infer is not None and seq > first:  # test, then train: predict, then learn
                for _, payload in self._infer_payloads(device_id, seq):
                    await self._publish_infer(client, device_id, payload)
            await self._publish_batch(client, device_id, self._event(device_id, seq))

    def _progress(self) -> None:
        self._any_answer.set()
        if self.on_progress is not None:
            self.on_progress(self.sent, self.answers.acked + self.answers.rejected)


def _essential(group: BaseExceptionGroup[Any]) -> BaseException:
    """What a task group's failure means: a lost connection first, else its only error."""
    leaves = _leaves(group)
    lost = [e for e in leaves if isinstance(e, aiomqtt.MqttError)]
    if lost:
        return lost[0]
    return leaves[0] if len(leaves) == 1 else group


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out
