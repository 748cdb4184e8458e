"""What ``vega-emu up`` runs: an embedded broker, a monitor, a fleet and a stream, in one process.

:class:`Up` is an async context manager. Entering starts, in this order, the run recorder (when
asked), an embedded broker on a free port, a :class:`~device.observe.monitor.FleetMonitor` that
feeds the recorder, a :class:`~device.fleet.fleet.Fleet` (entered once every node is connected)
and a :class:`~dataset_stream.StreamPublisher` that waits for every answer; leaving stops them in
the reverse order. :meth:`Up.run` streams the scenario to the end, waits until the monitor has
seen the answer to every device's last answered batch (a node answers in order, so everything it
published before that has been seen too), and returns the :class:`RunSummary`. Devices with
``offline`` windows go off the network and come back on them (:mod:`device.fleet.availability`),
at the stream's speed, or ``availability_speed`` simulated seconds per wall second in a closed
loop::

    async with Up(config) as up:
        summary = await up.run()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self

if TYPE_CHECKING:
    from broker import EmbeddedBroker
    from dataset_stream import Scenario, StreamPublisher
    from dataset_stream.pacing import Pacing
    from dataset_stream.protocol import RunSummary
    from device.faults import DeviceFaults
    from device.fleet.availability import Window
    from device.model.bundle import ModelBundle
    from device.node.settings import NodeSettings
    from device.observe.monitor import FleetMonitor

log = logging.getLogger(__name__)

#: How long :meth:`Up.run` waits, once the stream is done, for the monitor to see the last answers.
LANDING_TIMEOUT_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class UpConfig:
    """Everything a run of ``up`` needs, checked at the edge.

    ``settings``: each node's settings by device id, in fleet order; ``pacing``: how the
    stream feeds the fleet (``speed`` None: as fast as it learns); ``events``: learning events
    per device (None: all the scenario has); ``same_order``: every device gets the events in the
    same order; ``eval_by_reference``: each distinct eval set retained once and a reference per
    device (else the set per device); ``recording``: the run's recording (``run.sqlite``) to
    write, or None;
    ``described``: the run's settings as JSON-able values, stored in the recording and in the
    summary. ``offline``: devices that go offline, with their windows (simulated seconds from the
    fleet's start); ``miss``: those of them whose batches are lost while away (the others'
    wait at the broker); ``availability_speed``: simulated seconds per wall second for the
    windows when the stream is a closed loop; ``faults``: each device's injected faults
    (docs/faults.md); ``fleet``: JSON-able facts about the devices (their
    class, drawn values, offline windows) stored in the recording as ``devices``.
    """

    scenario: Scenario
    bundle: ModelBundle
    settings: Mapping[str, NodeSettings]
    pacing: Pacing
    events: int | None = None
    same_order: bool = False
    eval_by_reference: bool = True
    recording: Path | None = None
    described: Mapping[str, object] = field(default_factory=dict)
    offline: Mapping[str, tuple[Window, ...]] = field(default_factory=dict)
    miss: frozenset[str] = frozenset()
    availability_speed: float = 1.0
    faults: Mapping[str, DeviceFaults] = field(default_factory=dict)
    fleet: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.settings:
            raise ValueError("up needs at least one device, not an empty settings map")
        if self.events is not None and self.events < 1:
            raise ValueError(f"events must be >= 1, not {self.events!r}")


class Up:
    """``async with Up(config) as up``: broker, monitor, fleet and stream running; see the
    module docstring. ``broker``, ``monitor`` and ``stream`` are there while inside."""

    def __init__(self, config: UpConfig) -> None:
        self.config = config
        self.device_ids = list(config.settings)
        self._stack = contextlib.AsyncExitStack()
        self._started = 0.0
        self._broker: EmbeddedBroker | None = None
        self._monitor: FleetMonitor | None = None
        self._stream: StreamPublisher | None = None

    @property
    def broker(self) -> EmbeddedBroker:
        assert self._broker is not None, "inside async with only"
        return self._broker

    @property
    def monitor(self) -> FleetMonitor:
        assert self._monitor is not None, "inside async with only"
        return self._monitor

    @property
    def stream(self) -> StreamPublisher:
        assert self._stream is not None, "inside async with only"
        return self._stream

    async def __aenter__(self) -> Self:
        from broker import EmbeddedBroker
        from dataset_stream import StreamPublisher
        from device.fleet.availability import Follower
        from device.fleet.fleet import Fleet
        from device.node.presence import Presence
        from device.observe.monitor import FleetMonitor
        from device.observe.recorder import RunRecorder

        config = self.config
        self._started = time.monotonic()
        async with contextlib.AsyncExitStack() as stack:
            recorder = None
            if config.recording is not None:
                meta: dict[str, object] = {"command": "up", "config": dict(config.described)}
                if config.fleet:
                    meta["devices"] = dict(config.fleet)
                recorder = stack.enter_context(RunRecorder(config.recording, meta=meta))
            broker = await stack.enter_async_context(EmbeddedBroker(port=0))
            monitor = await stack.enter_async_context(
                FleetMonitor(
                    broker.url,
                    on_message=recorder.add if recorder is not None else None,
                    on_fault=recorder.add_fault if recorder is not None else None,
                    on_rollout=recorder.add_rollout if recorder is not None else None,
                )
            )
            pacing = config.pacing
            presences = {d: Presence(miss=d in config.miss) for d in config.offline}
            speed = pacing.speed if pacing.speed is not None else config.availability_speed
            await stack.enter_async_context(
                Fleet(
                    self.device_ids,
                    config.settings.__getitem__,
                    config.bundle,
                    broker.url,
                    presences=presences,
                    follower=Follower(config.offline, speed) if config.offline else None,
                    faults_for=config.faults.get if config.faults else None,
                )
            )
            stream = await stack.enter_async_context(
                StreamPublisher(
                    broker.url,
                    config.scenario,
                    self.device_ids,
                    cadence_s=pacing.cadence_s,
                    speed=pacing.speed,
                    events=config.events,
                    same_order=config.same_order,
                    eval_by_reference=config.eval_by_reference,
                    wait_for_answers=True,
                    infer_rate=pacing.infer_per_s,
                    stagger=pacing.stagger,
                )
            )
            self._broker, self._monitor, self._stream = broker, monitor, stream
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._broker = self._monitor = self._stream = None
        await self._stack.aclose()

    async def run(self) -> RunSummary:
        """Stream every event, wait for the monitor to see the last answers, and summarise."""
        from dataset_stream.protocol import RunSummary
        from device.observe.runsummary import device_summary

        stats = await self.stream.run()
        if stats.delivery is not None and not stats.delivery.complete:
            log.warning("%s", stats.delivery.missing_line())
        try:
            async with asyncio.timeout(LANDING_TIMEOUT_S):
                await self._until_seen()
        except TimeoutError:
            log.warning(
                "the monitor has not seen every device's last answer within %.0f s; the "
                "summary may miss the last messages",
                LANDING_TIMEOUT_S,
            )
        factory_classes = sorted({int(c) for c in self.config.scenario.factory[1]})
        devices = [device_summary(self.monitor.record(d), factory_classes) for d in self.device_ids]
        summary = RunSummary(
            devices=tuple(devices),
            stream=stats.summary(time.monotonic() - self._started),
            factory_classes=tuple(factory_classes),
        )
        return summary.with_config(self.config.described)

    async def _until_seen(self) -> None:
        """Until the monitor has seen, for every device, the answer to the last batch the
        stream saw answered (or has stopped): woken by each message the monitor handles."""
        from device.aio import cancel_and_wait

        monitor = self.monitor
        last = self._last_answered()
        while True:
            monitor.activity.clear()
            if monitor.stopped.is_set() or all(self._seen(d, seq) for d, seq in last.items()):
                return
            waiters = {
                asyncio.ensure_future(monitor.activity.wait()),
                asyncio.ensure_future(monitor.stopped.wait()),
            }
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    await cancel_and_wait(waiter)

    def _last_answered(self) -> dict[str, int]:
        """Each device's highest seq the stream got an answer for (devices with none left out)."""
        out = {}
        for device, ledger in self.stream.answers.devices.items():
            seq = ledger.sent_seq
            while seq in ledger.outstanding:
                seq -= 1
            if seq > 0:
                out[device] = seq
        return out

    def _seen(self, device: str, seq: int) -> bool:
        """Whether the monitor has an answer of ``device`` to ``seq`` or a later batch (for a
        telemetry, with the status that follows it)."""
        record = self.monitor.devices.get(device)
        if record is None:
            return False
        tel = record.telemetry
        if tel is not None and tel.seq >= seq:
            # and the retained status the node publishes right after it: the state the summary
            # shows is then the node's after its last event (idle), not the event's (learning)
            status = record.status
            return status is not None and status.last_seq is not None and status.last_seq >= tel.seq
        return any(
            (e.seq is not None and e.seq >= seq) or (e.gap_last is not None and e.gap_last >= seq)
            for e in record.recent_errors
        )


__all__ = ["LANDING_TIMEOUT_S", "Up", "UpConfig"]
