"""Watch a fleet through the broker: the latest telemetry, status and errors of every device.

``FleetMonitor`` is what an operator's dashboard does: it subscribes to ``{prefix}/+/telemetry``,
``status``, ``error`` and ``prediction`` like any other MQTT client, decodes each report into its
type (:class:`Telemetry`, :class:`Status`, :class:`ErrorMessage`, checked against the wire
schemas) and keeps per-device records for tables and summaries. A report that does not decode,
or whose ``device`` field is not the device of its topic, is counted (``invalid``, ``foreign``)
and logged, never recorded. Predictions (one per inference request: a fleet at 1 Hz sends
thousands a second) are only counted per device, from their topic, without decoding their JSON.

It rides out broker outages. The first connection must work (:class:`MonitorError` otherwise);
after that a lost connection is retried forever, in an explicit loop with backoff, on a
persistent session (clean session off, a client id of its own), so the broker queues what the
fleet publishes while the monitor is away. A telemetry seq already counted (a QoS 1
redelivery) is not counted twice. Leaving the context ends the session at the broker.

Delivery accounting (gaps, duplicates, rejected inputs, event lag) is kept per device in a
:class:`~device.observe.accounting.DeviceRecord` and for the fleet in :attr:`FleetMonitor.lag`, all
in
bounded memory. The event lag of a telemetry is the wall time it was handled here minus its
``t``, the scheduled *simulated* time of the batch it answers: it measures delivery plus learning
time only when the stream runs at ``--speed 1`` (at 10x, or closed loop, ``t`` runs ahead of or
behind the wall clock and the lag says how far).

``on_message(device, message, received)`` is called once per accepted message (a telemetry seq
already counted is not passed again) with its arrival wall time; a run recorder plugs in there.
What it raises ends the watch (``stopped`` is set) and is raised again on leaving the context.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from types import TracebackType
from typing import Final, Self, TypeAlias

import aiomqtt

from broker.session import Backoff
from broker.url import BrokerURL
from dataset_stream.protocol import (
    REPORT_KINDS,
    ErrorMessage,
    ForeignMessage,
    ProtocolError,
    Status,
    Telemetry,
    parse_topic,
    read_node_message,
    topic_filter,
    validate_prefix,
)
from device.aio import cancel_and_wait
from device.fleet.gateway import gateway_filter, read_gateway_status
from device.observe.accounting import DeviceRecord, LagStats
from device.observe.errors import MonitorError

log = logging.getLogger(__name__)

WATCHED: Final = (*REPORT_KINDS, "prediction")
#: Warnings per kind of ignored message before the rest are logged at debug level only.
WARNINGS_PER_KIND: Final = 5

#: ``on_message(device, message, received)``: ``received`` is the arrival wall time (unix s).
OnMessage: TypeAlias = Callable[[str, Telemetry | Status | ErrorMessage, float], None]


class FleetMonitor:
    """``async with FleetMonitor(url) as m``: ``m.devices`` fills as messages arrive."""

    def __init__(
        self,
        broker: BrokerURL,
        *,
        prefix: str = "vega",
        timeout: float = 10.0,
        client_id: str | None = None,
        backoff: Backoff | None = None,
        on_message: OnMessage | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.broker = broker
        self.prefix = validate_prefix(prefix)
        self.timeout = timeout
        self.client_id = client_id or f"vega-monitor-{secrets.token_hex(5)}"  # 23 characters
        self.devices: dict[str, DeviceRecord] = {}
        self.invalid = self.foreign = self.repeated = 0
        self.handled = 0  # messages handled, whatever they were
        self.accepted: dict[str, int] = dict.fromkeys(WATCHED, 0)  # by kind
        self.lag = LagStats()
        self.on_message = on_message
        self._clock = clock
        self.reconnects = 0
        self.connected = asyncio.Event()
        self.activity = asyncio.Event()  # set after each message handled
        self.stopped = asyncio.Event()  # the watch ended: an on_message hook raised (see aexit)
        self._backoff = backoff or Backoff(initial_s=0.2, cap_s=5.0)
        self._warned: dict[str, int] = {}
        self.gateways: dict[str, str] = {}  # gateway id -> its last state (online, offline)
        self._gateway_head = f"{self.prefix}/gateway/"
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        try:
            await self._end_session()  # what a session left under this id queued is stale
            client = await self._connect()
        except (aiomqtt.MqttError, OSError) as exc:  # TimeoutError is an OSError
            raise MonitorError(f"cannot connect to the broker at {self.broker}: {exc}") from exc
        self._task = asyncio.create_task(self._watch(client), name="fleet monitor")
        self._task.add_done_callback(lambda _: self.stopped.set())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        with contextlib.suppress(aiomqtt.MqttError, OSError):
            await self._end_session()

    def record(self, device: str) -> DeviceRecord:
        return self.devices.setdefault(device, DeviceRecord(device))

    # -- connection ----------------------------------------------------------------------------

    async def _connect(self) -> aiomqtt.Client:
        client = aiomqtt.Client(
            **self.broker.client_kwargs(),
            identifier=self.client_id,
            clean_session=False,
            timeout=self.timeout,
        )
        async with asyncio.timeout(self.timeout):
            await client.__aenter__()
        try:
            async with asyncio.timeout(self.timeout):
                # the gateways last: their retained statuses then come after the devices' ones
                filters = [topic_filter(self.prefix, k) for k in WATCHED]
                filters.append(gateway_filter(self.prefix))
                await client.subscribe([(f, 1) for f in filters])
        except BaseException:
            await _close(client, self.timeout)
            raise
        self.connected.set()
        return client

    async def _end_session(self) -> None:
        client = aiomqtt.Client(
            **self.broker.client_kwargs(),
            identifier=self.client_id,
            clean_session=True,
            timeout=self.timeout,
        )
        async with asyncio.timeout(self.timeout), client:
            pass

    async def _watch(self, client: aiomqtt.Client) -> None:
        """Read messages; when the connection drops, reconnect (forever, with backoff)."""
        while True:
            try:
                async for message in client.messages:
                    self.handle(message.topic.value, message.payload)
            except aiomqtt.MqttError as exc:
                log.warning("monitor: lost the broker at %s (%s); reconnecting", self.broker, exc)
            finally:
                self.connected.clear()
                await _close(client, self.timeout)
            client = await self._reconnect()

    async def _reconnect(self) -> aiomqtt.Client:
        while True:
            await asyncio.sleep(self._backoff.next_delay())
            try:
                client = await self._connect()
            except (aiomqtt.MqttError, OSError) as exc:  # the broker is still away
                log.debug("monitor: reconnecting to %s: %s", self.broker, exc)
                continue
            self._backoff.reset()
            self.reconnects += 1
            log.warning("monitor: reconnected to %s", self.broker)
            return client

    # -- messages ------------------------------------------------------------------------------

    def handle(self, where: str, payload: object) -> None:
        """Account one message; invalid and foreign ones are counted and logged, never raised."""
        try:
            self._handle(where, payload)
        finally:
            self.handled += 1
            self.activity.set()

    async def wait_handled(self, count: int) -> None:
        """Until ``count`` messages have been handled in all (bound it with a timeout)."""
        while self.handled < count:
            self.activity.clear()
            await self.activity.wait()

    def _handle(self, where: str, payload: object) -> None:
        if where.endswith("/prediction"):
            self._prediction(where)
            return
        if where.startswith(self._gateway_head):
            self._gateway(where, payload)
            return
        try:
            device, message = read_node_message(self.prefix, where, payload)
        except ForeignMessage as exc:
            self._ignore("foreign", str(exc))
            return
        except ProtocolError as exc:
            self._ignore("invalid", f"{where}: {exc}")
            return
        received = self._clock()
        record = self.record(device)
        if isinstance(message, Telemetry):
            if not record.add_telemetry(message, received):
                self.repeated += 1
                return
            self.lag.add(received - message.t)
            kind = "telemetry"
        elif isinstance(message, Status):
            record.status = message
            kind = "status"
        elif isinstance(message, ErrorMessage):
            record.add_error(message)
            kind = "error"
        else:  # pragma: no cover - predictions are counted by _prediction
            return
        self.accepted[kind] += 1
        if self.on_message is not None:
            self.on_message(device, message, received)

    def _gateway(self, where: str, payload: object) -> None:
        """A gateway's status (device.fleet.gateway): when it goes offline (its last will, or a
        clean stop), so do the devices behind it that still look online."""
        try:
            gateway, devices, state = read_gateway_status(self.prefix, where, payload)
        except ProtocolError as exc:
            self._ignore("invalid", f"{where[:200]}: {exc.message}")
            return
        self.gateways[gateway] = state
        if state != "offline":
            return
        received = self._clock()
        for device in devices:
            record = self.devices.get(device)
            if record is None or record.status is None or not record.status.online:
                continue
            record.status = Status(state="offline", device=device)
            if self.on_message is not None:
                self.on_message(device, record.status, received)

    def _prediction(self, where: str) -> None:
        """Count a prediction for the device of its topic (its payload is not decoded)."""
        try:
            device, _ = parse_topic(self.prefix, where)
        except ProtocolError as exc:
            self._ignore("foreign", f"{where[:200]!r}: {exc.message}")
            return
        record = self.record(device)
        record.predictions += 1
        record.prediction_received = self._clock()
        self.accepted["prediction"] += 1

    def _ignore(self, kind: str, text: str) -> None:
        if kind == "invalid":
            self.invalid += 1
        else:
            self.foreign += 1
        warned = self._warned[kind] = self._warned.get(kind, 0) + 1
        level = logging.WARNING if warned <= WARNINGS_PER_KIND else logging.DEBUG
        log.log(level, "monitor: ignoring a message (%s): %s", kind, text)


async def _close(client: aiomqtt.Client, within_s: float) -> None:
    """Disconnect ``client`` if it still is connected; never raises for a dead connection."""
    with contextlib.suppress(aiomqtt.MqttError, OSError):
        async with asyncio.timeout(within_s):
            await client.__aexit__(None, None, None)


__all__ = ["DeviceRecord", "FleetMonitor", "OnMessage"]
