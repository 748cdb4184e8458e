"""Watch a fleet through the broker: the latest telemetry, status and errors of every device.

``FleetMonitor`` is what an operator's dashboard does: it subscribes to ``{prefix}/+/telemetry``,
``status`` and ``error`` like any other MQTT client, decodes each message into its type
(:class:`Telemetry`, :class:`Status`, :class:`ErrorMessage`, checked against the wire schemas)
and keeps per-device records for tables and summaries. A message that does not decode, or whose
``device`` field is not the device of its topic, is counted (``invalid``, ``foreign``) and
logged, never recorded.

It rides out broker outages. The first connection must work (:class:`MonitorError` otherwise);
after that a lost connection is retried forever, in an explicit loop with backoff, on a
persistent session (clean session off, a client id of its own), so the broker queues what the
fleet publishes while the monitor is away. A telemetry seq already counted (a QoS 1
redelivery) is not counted twice. Leaving the context ends the session at the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, Self

import aiomqtt

from broker.url import BrokerURL
from dataset_stream.protocol import (
    REPORT_KINDS,
    ErrorMessage,
    ForeignMessage,
    ProtocolError,
    Status,
    Telemetry,
    read_node_message,
    topic_filter,
    validate_prefix,
)
from device.aio import cancel_and_wait
from device.errors import DeviceError
from device.mqtt import Backoff

log = logging.getLogger(__name__)

WATCHED: Final = REPORT_KINDS
#: Warnings per kind of ignored message before the rest are logged at debug level only.
WARNINGS_PER_KIND: Final = 5


class MonitorError(DeviceError):
    """The monitor could not make its first connection to the broker."""


@dataclass(slots=True)
class DeviceRecord:
    """What the monitor knows of one device.

    ``telemetry``: the one with the highest seq; ``first``: the one with the lowest; ``events``,
    ``energy_j`` and ``host_s`` count each telemetry seq once.
    """

    device: str
    telemetry: Telemetry | None = None
    first: Telemetry | None = None
    status: Status | None = None
    events: int = 0
    errors: list[ErrorMessage] = field(default_factory=list)
    energy_j: float = 0.0  # summed over the telemetry seen
    host_s: float = 0.0  # wall time the emulator spent, summed over the telemetry seen
    seqs: set[int] = field(default_factory=set)

    @property
    def state(self) -> str:
        if self.status is not None and self.status.state in ("offline", "depleted", "error"):
            return self.status.state
        if self.telemetry is not None:
            return self.telemetry.state
        return self.status.state if self.status is not None else "unknown"

    def add_telemetry(self, msg: Telemetry) -> bool:
        """Account ``msg``; False if its seq was counted before."""
        if msg.seq in self.seqs:
            return False
        self.seqs.add(msg.seq)
        self.events += 1
        self.energy_j += msg.energy_j["total"]
        self.host_s += msg.host_s
        if self.telemetry is None or msg.seq > self.telemetry.seq:
            self.telemetry = msg
        if self.first is None or msg.seq < self.first.seq:
            self.first = msg
        return True


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
    ) -> None:
        self.broker = broker
        self.prefix = validate_prefix(prefix)
        self.timeout = timeout
        self.client_id = client_id or f"vega-monitor-{secrets.token_hex(5)}"  # 23 characters
        self.devices: dict[str, DeviceRecord] = {}
        self.invalid = self.foreign = self.repeated = 0
        self.handled = 0  # messages handled, whatever they were
        self.reconnects = 0
        self.connected = asyncio.Event()
        self.activity = asyncio.Event()  # set after each message handled
        self._backoff = backoff or Backoff(initial_s=0.2, cap_s=5.0)
        self._warned: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        try:
            await self._end_session()  # what a session left under this id queued is stale
            client = await self._connect()
        except (aiomqtt.MqttError, OSError) as exc:  # TimeoutError is an OSError
            raise MonitorError(f"cannot connect to the broker at {self.broker}: {exc}") from exc
        self._task = asyncio.create_task(self._watch(client), name="fleet monitor")
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
                await client.subscribe([(topic_filter(self.prefix, k), 1) for k in WATCHED])
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
        try:
            device, message = read_node_message(self.prefix, where, payload)
        except ForeignMessage as exc:
            self._ignore("foreign", str(exc))
            return
        except ProtocolError as exc:
            self._ignore("invalid", f"{where}: {exc}")
            return
        record = self.record(device)
        if isinstance(message, Telemetry):
            if not record.add_telemetry(message):
                self.repeated += 1
        elif isinstance(message, Status):
            record.status = message
        else:
            record.errors.append(message)

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


__all__ = ["DeviceRecord", "FleetMonitor", "MonitorError"]
