"""``Node``: one emulated VEGA device on MQTT (async context manager).

A node learns each batch exactly once and in ``seq`` order, answers inference requests, and
reports what it does (docs/protocol.md). It is made of parts, each in its own module:

- :class:`~device.node.session.NodeSession`: its connection, a persistent MQTT session of its
  own or a fleet's shared connection, made again when lost;
- :class:`~device.node.dispatch.Dispatcher`: one message at a time, decoded, validated,
  handled, answered and acknowledged;
- :class:`~device.node.sequencer.Sequencer`: batches in ``seq`` order, exactly once, as the seq
  book (:mod:`device.node.delivery`) decides, each acknowledged once its event is committed;
- :class:`~device.node.engine.NodeEngine`: the learning event or inference itself, blocking and
  transactional, run in a worker thread.

The node owns their lifetime: ``async with`` opens the engine and starts the loop; leaving it
lets the message in hand finish (answered and acknowledged), then stops the loop and closes the
engine. Supervision: anything that still ends the loop is logged at once with its traceback,
published as a retained status ``error`` with the reason on the next connection, and the loop
is restarted with backoff. A broker that refuses the node for good stops it (``gave_up``).

Injected faults (``faults``, docs/faults.md) are carried out by :mod:`device.node.faulting`; a
crash or a brown-out (:class:`~device.node.errors.DeviceRestart`) ends the connection served,
and the supervisor drops the engine, opens it again from its state file, and serves on.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Self

from broker.backoff import Backoff
from broker.url import BrokerURL
from device.aio import cancel_and_wait
from device.clock import Clock, SystemClock
from device.errors import NodeGaveUp
from device.faults import DeviceFaults
from device.model.bundle import ModelBundle
from device.model.frozen import FrozenStage
from device.node.dispatch import Dispatcher
from device.node.engine import NodeEngine
from device.node.errors import DeviceRestart
from device.node.faulting import NodeFaults
from device.node.inbox import SharedConnection
from device.node.presence import Presence
from device.node.sequencer import TelemetryHook
from device.node.session import NodeSession
from device.node.settings import NodeSettings

log = logging.getLogger(__name__)

STOP_GRACE_S = 5.0  # a clean stop waits this long for the message in hand

__all__ = ["Node", "TelemetryHook"]


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
        faults: DeviceFaults | None = None,
        presence: Presence | None = None,
    ) -> None:
        self.settings = settings
        self.gateway = (
            gateway  # a shared connection (device.fleet.gateway); else a session of its own
        )
        self.bundle = bundle
        self.frozen = frozen or FrozenStage.shared(bundle)
        self.on_telemetry = on_telemetry
        self.clock = clock or SystemClock()  # times the hold of early batches
        self.faults = None if faults is None else NodeFaults(faults, self.clock)
        self.restarts = 0  # injected crashes and brown-outs survived
        self.engine: NodeEngine | None = None
        self.failures = 0  # session loops that ended with an unexpected error
        self.presence = presence  # on and off the network (availability); None: always on
        self._lock = asyncio.Lock()  # one event at a time
        self._session = NodeSession(settings, broker, backoff or Backoff(), presence, self._lock)
        self._task: asyncio.Task[None] | None = None
        self.gave_up: NodeGaveUp | None = None
        self.stopped = asyncio.Event()  # set when the node stops by itself (``gave_up``)

    # -- what its session knows ----------------------------------------------------------------

    @property
    def broker(self) -> BrokerURL:
        """The broker; a new one is used from the next connect."""
        return self._session.broker

    @broker.setter
    def broker(self, broker: BrokerURL) -> None:
        self._session.broker = broker

    @property
    def backoff(self) -> Backoff:
        """The backoff between reconnects of the node's own session."""
        return self._session.backoff

    @property
    def connected(self) -> asyncio.Event:
        """Set while a connection is served (subscribed, status published)."""
        return self._session.connected

    @property
    def connections(self) -> int:
        """Connections served so far."""
        return self._session.connections

    @property
    def failure(self) -> str | None:
        """The reason of the last loop failure, until a connection reported it."""
        return self._session.failure

    @property
    def device_id(self) -> str:
        return self.settings.device_id

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self.engine = await asyncio.to_thread(NodeEngine, self.settings, self.bundle, self.frozen)
        dispatcher = self._dispatcher(self.engine)
        self._task = asyncio.create_task(self._supervise(dispatcher), name=f"node {self.device_id}")
        return self

    def _dispatcher(self, engine: NodeEngine) -> Dispatcher:
        return Dispatcher(
            engine,
            clock=self.clock,
            lock=self._lock,
            on_telemetry=self.on_telemetry,
            faults=self.faults,
        )

    async def _restart(self) -> Dispatcher:
        """An injected crash: the engine's memory is gone; it is opened again from its file."""
        async with self._lock:
            engine, self.engine = self.engine, None
            if engine is not None:
                await asyncio.to_thread(engine.close)
            self.engine = await asyncio.to_thread(
                NodeEngine, self.settings, self.bundle, self.frozen
            )
        self.restarts += 1
        return self._dispatcher(self.engine)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task, self._task = self._task, None
        self._session.stopping = True
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

    # -- supervision -------------------------------------------------------------------------

    async def _supervise(self, dispatcher: Dispatcher) -> None:
        """Run the session loop forever; a loop that dies is logged, reported and restarted."""
        session = self._session
        backoff = Backoff(initial_s=1.0, cap_s=60.0)
        while True:
            connections = session.connections
            try:
                if self.gateway is None:
                    await session.run_own(dispatcher)
                else:
                    await session.run_shared(self.gateway, dispatcher)
            except DeviceRestart as exc:  # injected: the device starts again from its database
                session.connected.clear()
                log.warning("%s: %s; restarting from the state file", self.device_id, exc)
                dispatcher = await self._restart()
            except NodeGaveUp as exc:  # refused for good: the owner decides what happens
                log.error("%s", exc)
                self.gave_up = exc
                self.stopped.set()
                return
            except Exception as exc:  # the supervisor is the one place that sees everything
                self.failures += 1
                session.failure = f"{type(exc).__name__}: {exc}"[:1000]
                session.connected.clear()
                if session.connections > connections:
                    backoff.reset()  # it had worked: not a crash loop
                delay = backoff.next_delay()
                log.error(
                    "%s: node loop failed: %s; restarting in %.1f s",
                    self.device_id,
                    session.failure,
                    delay,
                    exc_info=exc,
                )
                await asyncio.sleep(delay)
