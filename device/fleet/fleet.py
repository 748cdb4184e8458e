"""A fleet: many nodes in one process, sharing one read-only model and one onnxruntime session.

A fleet is data plus a factory: the device ids and a function that gives each id its settings;
nodes are built on entry and own their state files.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self

from threadpoolctl import threadpool_limits

from broker.url import BrokerURL
from device.fleet.gateway import Gateway
from device.model.bundle import ModelBundle
from device.model.frozen import FrozenStage
from device.node.node import Node, TelemetryHook
from device.node.settings import NodeSettings

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
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        broker_for: Callable[[str], BrokerURL] | None = None,
        gateway: Gateway | None = None,
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
        self.nodes: dict[str, Node] = {}
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        frozen = FrozenStage.shared(self.bundle)
        async with contextlib.AsyncExitStack() as stack:
            # The fleet's parallelism is its nodes, on the worker threads; BLAS threads inside
            # each small matrix product only fight them (3.5x fewer events per second with
            # 100 nodes on 2 cores: benchmarks/fleet_scale.py). Restored when the fleet stops.
            stack.enter_context(threadpool_limits(limits=1, user_api="blas"))
            for device_id in self.device_ids:
                node = Node(
                    self.settings_for(device_id),
                    self.bundle,
                    self.broker if self.broker_for is None else self.broker_for(device_id),
                    frozen=frozen,
                    on_telemetry=self.on_telemetry,
                    gateway=self.gateway,
                )
                self.nodes[device_id] = await stack.enter_async_context(node)
            async with asyncio.timeout(self.connect_timeout_s):
                await asyncio.gather(*(n.connected.wait() for n in self.nodes.values()))
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()


__all__ = ["Fleet"]
