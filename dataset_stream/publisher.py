"""The paced publisher: a scenario's events for a fleet of devices, over MQTT.

``StreamPublisher`` connects on ``__aenter__`` and disconnects on ``__aexit__``; ``run()`` first
publishes the eval set to ``{prefix}/{id}/eval`` (QoS 1, retained) for every device, then the
learning events to ``{prefix}/{id}/batch`` (QoS 1) with ``seq`` 1..K and simulated capture time
``t = t0 + seq * cadence``:

- paced (``speed=X``): event ``k`` of every device is published ``(k - 1) * cadence / X`` seconds
  after the start (``speed=1`` is real time); a late tick is published at once, never in a burst;
- closed loop (``speed=None``): a device's first event is published once the device is online
  (its retained ``status`` is there and not ``offline``: a batch sent to a device that never
  connected would be dropped by the broker, as it holds no session for it yet); its next event
  once its ``telemetry`` (or an ``error`` rejecting it) for the previous ``seq`` has arrived; each
  device has at most one event in flight, so nothing queues up anywhere.

Telemetry and error messages of the fleet are counted in both modes (``acked``/``rejected``).
In paced mode ``run()`` returns after the last publish, or, with ``wait_for_answers``, once every
event has been answered (or ``ack_timeout`` has passed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from dataset_stream.errors import ProtocolError, PublishError
from dataset_stream.payloads import ProgressCallback, StreamStats, batch_payload, eval_payload
from dataset_stream.protocol import parse_topic, topic, topic_filter
from dataset_stream.protocol.topics import DEFAULT_PREFIX, validate_device_id
from dataset_stream.scenarios import Event, Scenario

if TYPE_CHECKING:
    import aiomqtt

    from broker.url import BrokerURL

log = logging.getLogger(__name__)

ANSWERS_AND_STATUS = ("telemetry", "error", "status")


class StreamPublisher:
    """Publish ``scenario`` to ``device_ids`` on ``broker``; see the module docstring."""

    def __init__(
        self,
        broker: BrokerURL,
        scenario: Scenario,
        device_ids: Sequence[str],
        *,
        prefix: str = DEFAULT_PREFIX,
        cadence: float = 60.0,
        speed: float | None = 1.0,
        events: int | None = None,
        same_order: bool = False,
        t0: float | None = None,
        client_id: str | None = None,
        on_progress: ProgressCallback | None = None,
        timeout: float = 10.0,
        ack_timeout: float = 300.0,
        max_in_flight: int = 32,
        wait_for_answers: bool = False,
    ) -> None:
        if not device_ids or len(set(device_ids)) != len(device_ids):
            raise ValueError("device_ids must be a non-empty list of distinct ids")
        for device_id in device_ids:
            validate_device_id(device_id)
        topic(prefix, device_ids[0], "batch")  # validates the prefix
        if not (math.isfinite(cadence) and cadence > 0):
            raise ValueError(f"cadence must be a positive number of seconds, not {cadence!r}")
        if speed is not None and not (math.isfinite(speed) and speed > 0):
            raise ValueError(f"speed must be positive or None (closed loop), not {speed!r}")
        if events is not None and events < 1:
            raise ValueError(f"events must be >= 1, not {events!r}")
        if timeout <= 0 or ack_timeout <= 0 or max_in_flight < 1:
            raise ValueError("timeout, ack_timeout and max_in_flight must be positive")
        self.broker = broker
        self.scenario = scenario
        self.device_ids = list(device_ids)
        self.prefix = prefix
        self.cadence = float(cadence)
        self.speed = speed
        self.same_order = same_order
        self.t0 = t0
        self.client_id = client_id
        self.on_progress = on_progress
        self.timeout = timeout
        self.ack_timeout = ack_timeout
        self.per_device = min(scenario.num_events, events or scenario.num_events)
        self.total = self.per_device * len(self.device_ids)
        self.sent = self.acked = self.rejected = self.eval_sent = 0
        self.stalled: list[str] = []
        self._max_in_flight = max_in_flight
        self.wait_for_answers = wait_for_answers
        self._sem = asyncio.Semaphore(max_in_flight)
        self._sent_seq = dict.fromkeys(self.device_ids, 0)
        self._done_seq = dict.fromkeys(self.device_ids, 0)
        self._answered = {d: asyncio.Event() for d in self.device_ids}
        self._online = {d: asyncio.Event() for d in self.device_ids}
        self._client: aiomqtt.Client | None = None

    async def __aenter__(self) -> Self:
        import aiomqtt

        client = aiomqtt.Client(
            **self.broker.client_kwargs(), identifier=self.client_id, timeout=self.timeout
        )
        client.pending_calls_threshold = self._max_in_flight + 1  # we bound them ourselves
        try:
            async with asyncio.timeout(self.timeout):
                await client.__aenter__()
        except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
            raise PublishError(f"cannot connect to the broker at {self.broker}: {exc}") from exc
        self._client = client
        try:
            kinds = ("telemetry", "error") if self.speed is not None else ANSWERS_AND_STATUS
            for kind in kinds:
                await client.subscribe(topic_filter(self.prefix, kind), qos=1)
        except aiomqtt.MqttError as exc:
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            raise PublishError(f"cannot subscribe on {self.broker}: {exc}") from exc
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        import aiomqtt

        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                async with asyncio.timeout(self.timeout):
                    await client.__aexit__(exc_type, exc, tb)

    async def run(self) -> StreamStats:
        """Publish the eval sets, then every device's events; return what was delivered."""
        import aiomqtt

        if self._client is None:
            raise RuntimeError("use 'async with StreamPublisher(...)' before run()")
        client = self._client
        started = time.monotonic()
        t0 = time.time() if self.t0 is None else self.t0
        try:
            async with asyncio.TaskGroup() as group:
                reader = group.create_task(self._read_answers(client))
                try:
                    await self._publish_evals(client)
                    if self.speed is None:
                        async with asyncio.TaskGroup() as devices:
                            for device_id in self.device_ids:
                                devices.create_task(self._closed_loop(client, device_id, t0))
                    else:
                        await self._paced(client, t0, self.cadence / self.speed)
                        if self.wait_for_answers:
                            await self._await_answers()
                finally:
                    reader.cancel()
        except ExceptionGroup as group:
            leaves = _leaves(group)
            lost = [e for e in leaves if isinstance(e, aiomqtt.MqttError)]
            if lost:
                raise PublishError(f"lost the broker at {self.broker}: {lost[0]}") from lost[0]
            if len(leaves) == 1:
                raise leaves[0] from None
            raise
        return StreamStats(
            devices=len(self.device_ids),
            total=self.total,
            sent=self.sent,
            acked=self.acked,
            rejected=self.rejected,
            eval_sent=self.eval_sent,
            elapsed_s=time.monotonic() - started,
            stalled=tuple(sorted(self.stalled)),
        )

    # -- publishing ------------------------------------------------------------------------------

    def _events(self, device_id: str) -> list[Event]:
        return self.scenario.events(device_id, self.same_order)[: self.per_device]

    async def _publish_evals(self, client: aiomqtt.Client) -> None:
        payload = await asyncio.to_thread(eval_payload, self.scenario)

        async def one(device_id: str) -> None:
            async with self._sem:
                where = topic(self.prefix, device_id, "eval")
                await client.publish(where, payload, qos=1, retain=True, timeout=self.timeout)
            self.eval_sent += 1

        async with asyncio.TaskGroup() as group:
            for device_id in self.device_ids:
                group.create_task(one(device_id))

    async def _send(
        self,
        client: aiomqtt.Client,
        device_id: str,
        event: Event,
        t0: float,
        cache: dict[int, bytes] | None = None,
    ) -> None:
        """Encode and publish one event; the semaphore bounds payloads held in memory."""
        async with self._sem:
            key = id(event.indices)
            payload = cache.get(key) if cache is not None else None
            if payload is None:
                payload = await asyncio.to_thread(
                    batch_payload, self.scenario, event, t0=t0, cadence=self.cadence
                )
                if cache is not None:
                    cache[key] = payload
            self._sent_seq[device_id] = event.seq  # before publishing: the answer may beat PUBACK
            where = topic(self.prefix, device_id, "batch")
            await client.publish(where, payload, qos=1, timeout=self.timeout)
        self.sent += 1
        self._progress()

    async def _paced(self, client: aiomqtt.Client, t0: float, period: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        streams = {d: self._events(d) for d in self.device_ids}
        for k in range(self.per_device):
            await asyncio.sleep(max(0.0, start + k * period - loop.time()))
            cache: dict[int, bytes] = {}  # devices sharing an event (--same-order) share its bytes
            async with asyncio.TaskGroup() as group:
                for device_id, events in streams.items():
                    group.create_task(self._send(client, device_id, events[k], t0, cache))

    async def _await_answers(self) -> None:
        """Paced mode: wait (up to ``ack_timeout``) until every sent event has been answered."""
        try:
            async with asyncio.timeout(self.ack_timeout):
                for device_id in self.device_ids:
                    answered = self._answered[device_id]
                    while self._done_seq[device_id] < self._sent_seq[device_id]:
                        answered.clear()
                        await answered.wait()
        except TimeoutError:
            late = [d for d in self.device_ids if self._done_seq[d] < self._sent_seq[d]]
            log.warning("no answer within %.0f s from %s", self.ack_timeout, ", ".join(late))
            self.stalled.extend(late)

    async def _closed_loop(self, client: aiomqtt.Client, device_id: str, t0: float) -> None:
        answered = self._answered[device_id]
        try:
            async with asyncio.timeout(self.ack_timeout):
                await self._online[device_id].wait()
        except TimeoutError:
            log.warning(
                "%s did not come online within %.0f s; not streaming to it",
                device_id,
                self.ack_timeout,
            )
            self.stalled.append(device_id)
            return
        for event in self._events(device_id):
            await self._send(client, device_id, event, t0)
            try:
                async with asyncio.timeout(self.ack_timeout):
                    while self._done_seq[device_id] < event.seq:
                        answered.clear()
                        await answered.wait()
            except TimeoutError:
                log.warning(
                    "%s did not answer seq %d within %.0f s; stopping its stream",
                    device_id,
                    event.seq,
                    self.ack_timeout,
                )
                self.stalled.append(device_id)
                return

    # -- answers ---------------------------------------------------------------------------------

    async def _read_answers(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            try:
                device_id, kind = parse_topic(self.prefix, message.topic.value)
            except ProtocolError:
                continue
            if device_id not in self._sent_seq or not isinstance(message.payload, bytes):
                continue
            if kind == "status":
                online = _state_of(message.payload) not in (None, "offline")
                (self._online[device_id].set if online else self._online[device_id].clear)()
                continue
            seq, code = _answer_of(message.payload)
            if seq is None or not self._done_seq[device_id] < seq <= self._sent_seq[device_id]:
                continue
            self._done_seq[device_id] = seq
            if kind == "telemetry" or code == "stale_seq":  # stale: applied before, so learnt
                self.acked += 1
            else:
                self.rejected += 1
            self._answered[device_id].set()
            self._progress()

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.sent, self.acked + self.rejected)


def _answer_of(payload: bytes) -> tuple[int | None, str | None]:
    """``(seq, code)`` of a telemetry or error message; ``seq`` is ``None`` when missing."""
    try:
        obj: Any = json.loads(payload)
        seq, code = obj.get("seq"), obj.get("code")
    except (ValueError, AttributeError, RecursionError):
        return None, None
    if not isinstance(seq, int) or isinstance(seq, bool):
        return None, None
    return seq, code if isinstance(code, str) else None


def _state_of(payload: bytes) -> str | None:
    """The ``state`` of a status message, ``None`` when unreadable."""
    try:
        state = json.loads(payload).get("state")
    except (ValueError, AttributeError, RecursionError):
        return None
    return state if isinstance(state, str) else None


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out
