"""Watch a fleet through the broker: the latest telemetry, status and errors of every device.

``FleetMonitor`` is what an operator's dashboard does: it subscribes to ``{prefix}/+/telemetry``,
``status`` and ``error`` like any other MQTT client, validates each message against the wire
schemas, and keeps per-device records for tables and summaries.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import aiomqtt

from broker.url import BrokerURL
from dataset_stream.protocol import (
    ProtocolError,
    parse_topic,
    topic_filter,
    validate_error,
    validate_status,
    validate_telemetry,
)
from device.aio import cancel_and_wait

log = logging.getLogger(__name__)


@dataclass(slots=True)
class DeviceRecord:
    """What the monitor knows of one device."""

    device: str
    telemetry: dict[str, Any] | None = None
    first: dict[str, Any] | None = None  # the first telemetry seen
    status: dict[str, Any] | None = None
    events: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    energy_j: float = 0.0  # summed over the telemetry seen
    host_s: float = 0.0  # wall time the emulator spent, summed over the telemetry seen

    @property
    def state(self) -> str:
        if self.status is not None and self.status.get("state") in ("offline", "depleted"):
            return str(self.status["state"])
        if self.telemetry is not None:
            return str(self.telemetry["state"])
        return str(self.status["state"]) if self.status else "unknown"


class FleetMonitor:
    """``async with FleetMonitor(url) as m``: ``m.devices`` fills as messages arrive."""

    def __init__(self, broker: BrokerURL, *, prefix: str = "vega", timeout: float = 10.0) -> None:
        self.broker = broker
        self.prefix = prefix
        self.timeout = timeout
        self.devices: dict[str, DeviceRecord] = {}
        self.invalid = 0
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._watch(), name="fleet monitor")
        ready = asyncio.ensure_future(self._ready.wait())
        await asyncio.wait({ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():
            ready.cancel()
            self._task.result()  # raises what stopped it
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

    def record(self, device: str) -> DeviceRecord:
        return self.devices.setdefault(device, DeviceRecord(device))

    async def _watch(self) -> None:
        async with aiomqtt.Client(**self.broker.client_kwargs(), timeout=self.timeout) as client:
            for kind in ("telemetry", "status", "error"):
                await client.subscribe(topic_filter(self.prefix, kind), qos=1)
            self._ready.set()
            async for message in client.messages:
                self.handle(message.topic.value, message.payload)

    def handle(self, where: str, payload: object) -> None:
        """Account one message (invalid ones are counted and logged, never raised)."""
        try:
            device, kind = parse_topic(self.prefix, where)
            if not isinstance(payload, bytes | bytearray):
                raise ProtocolError("bad_format", "payload is not bytes")
            obj = json.loads(payload)
            rec = self.record(device)
            if kind == "telemetry":
                rec.telemetry = validate_telemetry(obj)
                rec.first = rec.first or rec.telemetry
                rec.events += 1
                rec.energy_j += float(rec.telemetry["energy_j"]["total"])
                rec.host_s += float(rec.telemetry["host_s"])
            elif kind == "status":
                rec.status = validate_status(obj)
            elif kind == "error":
                rec.errors.append(validate_error(obj))
        except (ProtocolError, ValueError) as exc:  # JSONDecodeError is a ValueError
            self.invalid += 1
            log.warning("monitor: ignoring an invalid message on %s: %s", where, exc)


__all__ = ["DeviceRecord", "FleetMonitor"]
