"""A fleet: many nodes in one process, sharing one read-only model and one onnxruntime session.

A fleet is data plus a factory: the device ids and a function that gives each id its settings;
nodes are built on entry and own their state files.

Entering a fleet waits until every node is connected, as a node waits for its broker: a broker
that is down is waited for (up to ``connect_timeout_s``; ``None``: until cancelled), a node that
the broker refuses for good ends the wait with its :class:`~device.errors.NodeGaveUp`, and a
gateway that fails ends it with a :class:`~device.errors.NodeError`. Leaving it (or a failed or
cancelled entry) stops every node at the same time.

Devices with a :class:`~device.node.presence.Presence` go offline and come back as the fleet's
:class:`~device.fleet.availability.Follower` says, from the moment every node is connected
until the fleet stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Self

from threadpoolctl import threadpool_limits

from broker.url import BrokerURL
from device.aio import cancel_and_wait
from device.errors import NodeError
from device.faults import DeviceFaults
from device.fleet.availability import Follower
from device.fleet.gateway import Gateway
from device.model.bundle import ModelBundle
from device.model.frozen import FrozenStage
from device.node.node import Node, TelemetryHook
from device.node.presence import Presence
from device.node.settings import NodeSettings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 30.0


class Fleet:
    """``async with Fleet(ids, settings_for, bundle, broker) as fleet``: every node connected."""

    def __init__(
        self,
        device_ids: Sequence[str],
        settings_for: Callable[[str], NodeSettings],
        bundle: ModelBundle,
        broker: BrokerURL,
        *,
        on_telemetry: TelemetryHook | None = None,
        connect_timeout_s: float | None = CONNECT_TIMEOUT_S,
        broker_for: Callable[[str], BrokerURL] | None = None,
        gateway: Gateway | None = None,
        faults_for: Callable[[str], DeviceFaults | None] | None = None,
        presences: Mapping[str, Presence] | None = None,
        follower: Follower | None = None,
    ) -> None:
        if not device_ids or len(set(device_ids)) != len(device_ids):
            raise ValueError("a fleet needs distinct device ids")
        self.device_ids = list(device_ids)
        self.settings_for = settings_for
        self.bundle = bundle
        self.broker = broker
        self.on_telemetry = on_telemetry
        self.connect_timeout_s = connect_timeout_s
        self.broker_for = broker_for  # each device's own login, when nodes have their own
        self.gateway = gateway  # one shared connection for every node (device.fleet.gateway)
        if gateway is not None and broker_for is not None:
            raise ValueError("nodes behind a gateway share its login: no per-device logins")
        self.faults_for = faults_for  # each device's injected faults (device.faults)
        self.presences = dict(presences or {})  # devices that go offline: their switches
        self.follower = follower  # when they do
        self.nodes: dict[str, Node] = {}
        self._running: list[Node] = []  # entered and not stopped yet
        self._following: asyncio.Task[None] | None = None
        self._limits: contextlib.ExitStack | None = None

    async def __aenter__(self) -> Self:
        frozen = FrozenStage.shared(self.bundle)
        limits = contextlib.ExitStack()
        # The fleet's parallelism is its nodes, on the worker threads; BLAS threads inside each
        # small matrix product only fight them (3.5x fewer events per second with 100 nodes on
        # 2 cores: benchmarks/fleet_scale.py). Restored when the fleet stops.
        limits.enter_context(threadpool_limits(limits=1, user_api="blas"))
        self._limits = limits
        try:
            for device_id in self.device_ids:
                node = Node(
                    self.settings_for(device_id),
                    self.bundle,
                    self.broker if self.broker_for is None else self.broker_for(device_id),
                    frozen=frozen,
                    on_telemetry=self.on_telemetry,
                    gateway=self.gateway,
                    faults=None if self.faults_for is None else self.faults_for(device_id),
                    presence=self.presences.get(device_id),
                )
                if self.gateway is not None and device_id in self.presences:
                    self.gateway.presences[device_id] = self.presences[device_id]
                self.nodes[device_id] = await node.__aenter__()
                self._running.append(node)
            await self._connected()
            if self.follower is not None:
                self._following = asyncio.create_task(
                    self.follower.run(self.presences), name="availability"
                )
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()

    async def _connected(self) -> None:
        """Until every node is connected; see the module docstring for what ends the wait."""
        nodes = list(self.nodes.values())
        waits: list[asyncio.Future[object]] = [
            asyncio.ensure_future(self._connected_or_stopped(n)) for n in nodes
        ]
        if self.gateway is not None:
            waits.append(asyncio.ensure_future(self.gateway.failed.wait()))
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                for done in asyncio.as_completed(waits):
                    await done
                    if self.gateway is not None and self.gateway.failed.is_set():
                        raise NodeError(
                            f"gateway {self.gateway.gateway_id} failed: {self.gateway.failure}"
                        )
                    for node in nodes:
                        if node.gave_up is not None:
                            raise node.gave_up
                    if all(n.connected.is_set() for n in nodes):
                        return
        except TimeoutError:
            waiting = [n for n in nodes if not n.connected.is_set()]
            raise NodeError(
                f"{len(waiting)} of {len(nodes)} nodes did not connect to {self.broker} within "
                f"{self.connect_timeout_s:g} s, e.g. {waiting[0].device_id}"
            ) from None
        finally:
            for wait in waits:
                wait.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    @staticmethod
    async def _connected_or_stopped(node: Node) -> None:
        connected = asyncio.ensure_future(node.connected.wait())
        stopped = asyncio.ensure_future(node.stopped.wait())
        try:
            await asyncio.wait({connected, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            connected.cancel()
            stopped.cancel()
            await asyncio.gather(connected, stopped, return_exceptions=True)

    async def _stop(self) -> None:
        """Stop every node at once (each lets the message in hand finish), then lift the limits;
        the first error a node raised while stopping is raised after all of them stopped."""
        following, self._following = self._following, None
        if following is not None:
            await cancel_and_wait(following)
        nodes, self._running = self._running, []
        try:
            results = await asyncio.gather(
                *(n.__aexit__(None, None, None) for n in nodes), return_exceptions=True
            )
        finally:
            limits, self._limits = self._limits, None
            if limits is not None:
                limits.close()
        errors = [r for r in results if isinstance(r, BaseException)]
        for node, result in zip(nodes, results, strict=True):
            if isinstance(result, Exception):
                log.error("%s: stopping failed: %s", node.device_id, result, exc_info=result)
        if errors:
            raise errors[0]


__all__ = ["Fleet"]
