"""Watch a fleet through the broker: the latest telemetry, status and errors of every device.

``FleetMonitor`` is what an operator's dashboard does: it subscribes to ``{prefix}/+/telemetry``,
``status``, ``error`` and ``prediction`` like any other MQTT client, decodes each report into its
type (:class:`Telemetry`, :class:`Status`, :class:`ErrorMessage`, checked against the wire
schemas) and keeps per-device records for tables and summaries. A report that does not decode,
or whose ``device`` field is not the device of its topic, is counted (``invalid``, ``foreign``)
and logged, never recorded. Predictions (one per inference request: a fleet at 1 Hz sends
thousands a second) are only counted per device, from their topic, without decoding their JSON.

It rides out broker outages. The first connection must work (:class:`MonitorError` otherwise);
after that a lost connection is retried forever, in an explicit loop with backoff
(:class:`broker.reconnect.Reconnect`), on a persistent session (clean session off, a client id
of its own), so the broker queues what the fleet publishes while the monitor is away. A
telemetry seq already counted (a QoS 1 redelivery) is not counted twice. A subscription the
broker refuses (its ACL) is a :class:`MonitorError`: on the first connection at once, later
when leaving the context. Leaving the context ends the session at the broker.

The downlink: each device's retained desired and reported state (``{prefix}/+/desired``,
``{prefix}/+/reported``) set the versions of its record (:attr:`DeviceRecord.converged`), and
every rollout's state (``{prefix}/rollout/+/state``, :class:`RolloutState`) is kept by name in
:attr:`FleetMonitor.rollouts` and passed to ``on_rollout`` (the run recorder). A desired state
no device could apply is still a version an operator set: it is counted as the device's desired
version (the device answers it with a refusal). These are read as the rest: what does not decode
is counted (``invalid``, ``foreign``) and logged.

Injected faults (``{prefix}/+/fault``, docs/faults.md) are counted by kind (``faults``), kept in
each device's record (delivery accounting tells trouble during them apart), and passed to
``on_fault`` (the run recorder).

A gateway's status (:class:`~dataset_stream.protocol.GatewayStatus`, on
``{prefix}/gateway/{id}/status``) that says ``offline`` marks the devices it lists offline
(those that still look online), since they have no last will of their own -- but only the
devices that gateway owns: a gateway ``gw-{first}-{count}`` speaks for the ``count`` fleet ids
from ``first`` on (:func:`broker.acl.gateway_owns`, the range the broker's ACL gives that
gateway user), a gateway named otherwise for none. A status that names other devices is
counted (``foreign``, once per status) and logged (a warning once per gateway), and is applied
to the gateway's own devices only. On a broker that binds client ids to users and has the
generated ACL, the id in the topic is the gateway's login, so a gateway's credentials cannot
mark another gateway's, or a standalone node's, devices offline.

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
import time
from collections.abc import Callable
from types import TracebackType
from typing import Final, Self, TypeAlias, TypeVar

import aiomqtt

from broker.acl import gateway_owns
from broker.backoff import Backoff
from broker.errors import SubscriptionRefused
from broker.reconnect import Reconnect
from broker.session import Session, close, new_client_id
from broker.url import BrokerURL
from dataset_stream.protocol import (
    REPORT_KINDS,
    DesiredRefused,
    ErrorMessage,
    FaultReport,
    ForeignMessage,
    ProtocolError,
    RolloutState,
    Status,
    Telemetry,
    gateway_filter,
    parse_topic,
    read_desired,
    read_fault,
    read_gateway_status,
    read_node_message,
    read_reported,
    topic_filter,
    validate_prefix,
)
from device.aio import cancel_and_wait
from device.observe.accounting import DeviceRecord, LagStats
from device.observe.errors import MonitorError

log = logging.getLogger(__name__)

WATCHED: Final = (*REPORT_KINDS, "prediction")
#: Warnings per kind of ignored message before the rest are logged at debug level only.
WARNINGS_PER_KIND: Final = 5

#: ``on_message(device, message, received)``: ``received`` is the arrival wall time (unix s).
_M = TypeVar("_M")
OnMessage: TypeAlias = Callable[[str, Telemetry | Status | ErrorMessage, float], None]
#: ``on_fault(report, received)``: an injected fault a node reported (docs/faults.md).
OnFault: TypeAlias = Callable[[FaultReport, float], None]
#: ``on_rollout(state, received)``: a step of a rollout (docs/downlink.md).
OnRollout: TypeAlias = Callable[[RolloutState, float], None]
#: The downlink's kinds the monitor reads besides the reports.
DOWNLINK_KINDS: Final = ("desired", "reported")


class FleetMonitor:
    """``async with FleetMonitor(url) as m``: ``m.devices`` fills as messages arrive."""

    def __init__(
        self,
        broker: BrokerURL,
        *,
        prefix: str = "vega",
        timeout_s: float = 10.0,
        client_id: str | None = None,
        backoff: Backoff | None = None,
        on_message: OnMessage | None = None,
        on_fault: OnFault | None = None,
        on_rollout: OnRollout | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.broker = broker
        self.prefix = validate_prefix(prefix)
        self.timeout_s = timeout_s
        self.client_id = client_id or new_client_id("monitor")
        self.devices: dict[str, DeviceRecord] = {}
        self.invalid = self.foreign = self.repeated = 0
        self.handled = 0  # messages handled, whatever they were
        self.accepted: dict[str, int] = dict.fromkeys(WATCHED, 0)  # by kind
        self.lag = LagStats()
        self.faults: dict[str, int] = {}  # injected faults reported, by kind
        self.on_fault = on_fault
        self.on_message = on_message
        self.on_rollout = on_rollout
        self.rollouts: dict[str, RolloutState] = {}  # by name: the latest step of each
        self._clock = clock
        self.connected = asyncio.Event()
        self.activity = asyncio.Event()  # set after each message handled
        self.stopped = asyncio.Event()  # the watch ended: an on_message hook raised (see aexit)
        self._session = Session(broker, self.client_id, timeout_s=timeout_s)
        self._reconnect = Reconnect(
            backoff or Backoff(initial_s=0.2, cap_s=5.0),
            broker=broker,
            who="monitor",
            client_id=self.client_id,
        )
        # the gateways last: their retained statuses then come after the devices' ones
        self._filters = [(topic_filter(self.prefix, k), 1) for k in WATCHED]
        self._filters.append((topic_filter(self.prefix, "fault"), 1))  # injected faults
        self._filters += [(topic_filter(self.prefix, k), 1) for k in DOWNLINK_KINDS]
        self._filters.append((f"{self.prefix}/rollout/+/state", 1))
        self._filters.append((gateway_filter(self.prefix), 1))
        self._warned: dict[str, int] = {}
        self.gateways: dict[str, str] = {}  # gateway id -> its last state (online, offline)
        self._gateway_head = f"{self.prefix}/gateway/"
        self._rollout_head = f"{self.prefix}/rollout/"
        self._untrusted_gateways: set[str] = set()  # warned about once
        self._task: asyncio.Task[None] | None = None

    @property
    def radio_share(self) -> float | None:
        """The radio's share of the energy in the telemetry seen (its ``energy_j`` ``radio``
        over ``total``); None when no node reported a radio."""
        records = self.devices.values()
        radio_j = sum(rec.energy_by_phase_j.get("radio", 0.0) for rec in records)
        total_j = sum(rec.energy_j for rec in records)
        if not any("radio" in rec.energy_by_phase_j for rec in records) or total_j <= 0:
            return None
        return radio_j / total_j

    @property
    def harvest_j(self) -> float | None:
        """Joules the fleet's harvesters put into batteries, as the telemetry seen says
        (``energy_j`` ``harvest``); None when no node reported a harvester."""
        records = self.devices.values()
        if not any("harvest" in rec.energy_by_phase_j for rec in records):
            return None
        return sum(rec.energy_by_phase_j.get("harvest", 0.0) for rec in records)

    @property
    def policy_skipped(self) -> int:
        """Events the nodes' energy-aware policies did not learn (``energy_policy`` errors)."""
        return sum(rec.errors_by_code.get("energy_policy", 0) for rec in self.devices.values())

    @property
    def reconnects(self) -> int:
        """Connections made after the first."""
        return self._reconnect.reconnects

    async def __aenter__(self) -> Self:
        try:
            await self._session.end()  # what a session left under this id queued is stale
            client = await self._connect()
        except (aiomqtt.MqttError, OSError) as exc:  # TimeoutError is an OSError
            raise MonitorError(f"cannot connect to the broker at {self.broker}: {exc}") from exc
        except MonitorError:  # connected but refused: leave no session behind
            with contextlib.suppress(aiomqtt.MqttError, OSError):
                await self._session.end()
            raise
        self._reconnect.connected()
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
            await self._session.end()

    def record(self, device: str) -> DeviceRecord:
        return self.devices.setdefault(device, DeviceRecord(device))

    # -- connection ----------------------------------------------------------------------------

    async def _connect(self) -> aiomqtt.Client:
        try:
            client = await self._session.open(self._filters)
        except SubscriptionRefused as exc:
            raise MonitorError(str(exc)) from exc
        self.connected.set()
        return client

    async def _watch(self, client: aiomqtt.Client) -> None:
        """Read messages; when the connection drops, reconnect (forever, with backoff)."""
        while True:
            cause: BaseException = aiomqtt.MqttError("the message stream ended")
            try:
                async for message in client.messages:
                    self.handle(message.topic.value, message.payload)
            except aiomqtt.MqttError as exc:
                cause = exc
            finally:
                self.connected.clear()
                await close(client, within_s=self.timeout_s)
            client = await self._reconnect.again(self._connect, cause)

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
        if where.endswith("/fault") and not where.startswith(self._gateway_head):
            self._fault(where, payload)
            return
        if where.startswith(self._gateway_head) and "/" in where[len(self._gateway_head) :]:
            self._gateway(where, payload)  # {prefix}/gateway/{id}/status, not a device "gateway"
            return
        if where.startswith(self._rollout_head) and "/" in where[len(self._rollout_head) :]:
            self._rollout(where, payload)  # {prefix}/rollout/{name}/state
            return
        if where.endswith(("/desired", "/reported")):
            self._downlink(where, payload)
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

    def _read(
        self, reader: Callable[[str, str, object], _M], where: str, payload: object
    ) -> _M | None:
        """``reader``'s message on ``where``, or None: a message of another topic or device is
        counted ``foreign``, one that breaks the contract ``invalid``."""
        try:
            return reader(self.prefix, where, payload)
        except ForeignMessage as exc:
            self._ignore("foreign", str(exc))
        except ProtocolError as exc:
            self._ignore("invalid", f"{where[:200]}: {exc.message}")
        return None

    def _gateway(self, where: str, payload: object) -> None:
        """A gateway's status: when it goes offline (its last will, or a clean stop), so do the
        devices behind it that still look online."""
        status = self._read(read_gateway_status, where, payload)
        if status is None:
            return
        self.gateways[status.gateway] = status.state
        mine = [d for d in status.devices if gateway_owns(status.gateway, d)]
        if len(mine) < len(status.devices):
            self._untrusted(status.gateway, [d for d in status.devices if d not in mine])
        if status.online:
            return
        received = self._clock()
        for device in mine:
            record = self.devices.get(device)
            if record is None or record.status is None or not record.status.online:
                continue
            record.status = Status.offline(device)
            if self.on_message is not None:
                self.on_message(device, record.status, received)

    def _downlink(self, where: str, payload: object) -> None:
        """A device's retained desired or reported state: the versions of its record."""
        try:
            if where.endswith("/desired"):
                try:
                    desired = read_desired(self.prefix, where, payload)
                except DesiredRefused as exc:
                    if exc.version is None or exc.field == "device":
                        raise
                    device, _ = parse_topic(self.prefix, where)  # set, but no device can apply it
                    self.record(device).desired_version = exc.version
                    return
                self.record(desired.device).desired_version = desired.version
                return
            reported = read_reported(self.prefix, where, payload)
        except ForeignMessage as exc:
            self._ignore("foreign", str(exc))
            return
        except ProtocolError as exc:
            self._ignore("invalid", f"{where[:200]}: {exc.message}")
            return
        record = self.record(reported.device)
        record.reported_version = reported.version
        refused = reported.refused
        record.refused_version = None if refused is None else refused.version

    def _rollout(self, where: str, payload: object) -> None:
        """A rollout's step: kept by name, passed to ``on_rollout``."""
        name = where[len(self._rollout_head) :].partition("/")[0]
        if not isinstance(payload, bytes | bytearray) or not where.endswith("/state"):
            self._ignore("foreign", f"{where[:200]}: not a rollout state")
            return
        try:
            state = RolloutState.from_json(bytes(payload))
        except ProtocolError as exc:
            self._ignore("invalid", f"{where[:200]}: {exc.message}")
            return
        if state.name != name:
            self._ignore("foreign", f"rollout {state.name!r} on the topic of {name!r}")
            return
        self.rollouts[name] = state
        if self.on_rollout is not None:
            self.on_rollout(state, self._clock())

    def _untrusted(self, gateway: str, devices: list[str]) -> None:
        """A gateway's status named devices it does not own: counted, warned once per gateway,
        not applied to them."""
        self.foreign += 1
        level = logging.DEBUG if gateway in self._untrusted_gateways else logging.WARNING
        self._untrusted_gateways.add(gateway)
        log.log(
            level,
            "monitor: gateway %s named %d device(s) it does not own (%s); ignored for those",
            gateway,
            len(devices),
            ", ".join(devices[:3]) + (", ..." if len(devices) > 3 else ""),
        )

    def _fault(self, where: str, payload: object) -> None:
        """An injected fault a node reports: counted by kind, kept in its device's record."""
        report = self._read(read_fault, where, payload)
        if report is None:
            return
        self.record(report.device).add_fault(report)
        self.faults[report.kind] = self.faults.get(report.kind, 0) + 1
        if self.on_fault is not None:
            self.on_fault(report, self._clock())

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


__all__ = ["DeviceRecord", "FleetMonitor", "OnFault", "OnMessage", "OnRollout"]
