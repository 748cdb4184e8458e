"""What a node publishes, on whichever client serves it (its own, or a gateway's).

:class:`Outbox` words nothing itself: the engine builds the messages (:mod:`device.node.reporting`,
:mod:`dataset_stream.protocol`); the outbox puts them on the node's topics with the QoS and retain
flag each one needs, and remembers the last status it published, so that a state is published
once when it changes, not with every batch. Every error is logged as it is published.
"""

from __future__ import annotations

import logging

import aiomqtt

from dataset_stream.protocol import ErrorMessage, Prediction, Telemetry, topic
from device.node.engine import NodeEngine

log = logging.getLogger(__name__)

__all__ = ["Outbox"]


class Outbox:
    """A node's reports: ``telemetry``, ``prediction``, ``error`` and the retained ``status``."""

    def __init__(self, engine: NodeEngine) -> None:
        self._engine = engine
        self.device_id = engine.settings.device_id
        self._prefix = engine.settings.prefix
        self.state = "idle"  # the last status published

    def topic(self, kind: str) -> str:
        """This node's topic ``{prefix}/{id}/{kind}``."""
        return topic(self._prefix, self.device_id, kind)

    async def status(self, client: aiomqtt.Client, state: str, reason: str | None = None) -> None:
        """Publish the retained status (the engine's: ``depleted`` wins) and remember its state."""
        status = self._engine.status(state, reason)
        if reason:
            log.warning("%s: status %s: %s", self.device_id, status.state, reason)
        await client.publish(self.topic("status"), status.to_json(), qos=1, retain=True)
        self.state = status.state

    async def error(self, client: aiomqtt.Client, error: ErrorMessage) -> None:
        log.warning("%s: %s: %s", self.device_id, error.code, error.message)
        await client.publish(self.topic("error"), error.to_json(), qos=1)

    async def telemetry(self, client: aiomqtt.Client, telemetry: Telemetry) -> None:
        await client.publish(self.topic("telemetry"), telemetry.to_json(), qos=1)

    async def prediction(self, client: aiomqtt.Client, prediction: Prediction) -> None:
        await client.publish(self.topic("prediction"), prediction.to_json(), qos=1)
