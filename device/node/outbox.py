"""What a node publishes, on whichever client serves it (its own, or a gateway's).

:class:`Outbox` words nothing itself: the engine builds the messages (:mod:`device.node.reporting`,
:mod:`dataset_stream.protocol`); the outbox puts them on the node's topics with the QoS and retain
flag each one needs. It remembers the state of the last status it published and the last
accuracy and mean forgetting a telemetry reported, which every later status carries, with the
time the current connection was made (``online_since``, set by :meth:`Outbox.connected`). A node
evaluates for a status only when an eval set arrives (or its reference names the set in use) and
it has no accuracy to report yet: before its first learned event it measures its factory model,
and after a restart with events learned its head as it is; :meth:`Outbox.measured_status`
publishes that accuracy (for the factory model with the accuracy of each class: ``events`` 0),
and later statuses carry it until a telemetry reports another.
Every error is logged as it is published. The downlink's answers (:meth:`Outbox.news`): the
retained ``reported`` state after each change of the desired state in force and on each
connection, and a ``bad_desired`` error for each desired state refused.
"""

from __future__ import annotations

import logging
import time

import aiomqtt

from broker.session import publish
from dataset_stream.protocol import ErrorMessage, Prediction, Telemetry, topic
from dataset_stream.protocol.desired import ReportedState
from device.learning.learner import Evaluation
from device.node.energy_policy import DEFERRED_CODE, POLICY_CODE
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
        self.accuracy: float | None = None  # the last one a telemetry reported
        self.forgetting: float | None = None  # the last mean forgetting a telemetry reported
        self.online_since: float | None = None  # wall time the current connection was made

    def connected(self) -> None:
        """A new connection is made: its statuses carry its time (``online_since``)."""
        self.online_since = time.time()

    def topic(self, kind: str) -> str:
        """This node's topic ``{prefix}/{id}/{kind}``."""
        return topic(self._prefix, self.device_id, kind)

    async def status(
        self,
        client: aiomqtt.Client,
        state: str,
        reason: str | None = None,
        *,
        accuracy_by_class: dict[int, float] | None = None,
    ) -> None:
        """Publish the retained status (the engine's: ``depleted`` wins) and remember its state."""
        status = self._engine.status(
            state,
            reason,
            self.accuracy,
            self.online_since,
            forgetting=self.forgetting,
            accuracy_by_class=accuracy_by_class,
        )
        if reason:
            log.warning("%s: status %s: %s", self.device_id, status.state, reason)
        await publish(client, self.topic("status"), status.to_json(), retain=True)
        self.state = status.state

    async def error(self, client: aiomqtt.Client, error: ErrorMessage) -> None:
        # a batch the energy policy skips or defers is the node's choice: logged as info
        level = logging.INFO if error.code in (POLICY_CODE, DEFERRED_CODE) else logging.WARNING
        log.log(level, "%s: %s: %s", self.device_id, error.code, error.message)
        await publish(client, self.topic("error"), error.to_json())

    async def measured_status(
        self, client: aiomqtt.Client, evaluation: Evaluation, *, factory: bool
    ) -> None:
        """Publish an accuracy measured outside any event in the status (in the state of the last
        one), and carry it in the next ones: the ``factory`` model's, before the first learned
        event, with its accuracy of each class; or the head's as it is, in a node restarted with
        events learned."""
        self.accuracy = evaluation.accuracy
        by_class = self._engine.factory_accuracy_by_class(evaluation) if factory else None
        await self.status(client, self.state, accuracy_by_class=by_class)

    async def telemetry(self, client: aiomqtt.Client, telemetry: Telemetry) -> None:
        if telemetry.accuracy is not None:
            self.accuracy = telemetry.accuracy
        if telemetry.classes is not None and telemetry.classes.forgetting is not None:
            self.forgetting = telemetry.classes.forgetting
        await publish(client, self.topic("telemetry"), telemetry.to_json())

    async def reported(self, client: aiomqtt.Client, state: ReportedState | None = None) -> None:
        """Publish the retained reported state (the engine's current one by default)."""
        state = state or self._engine.reported()
        await publish(client, self.topic("reported"), state.to_json(), retain=True)

    async def news(self, client: aiomqtt.Client) -> None:
        """Publish what the downlink has to say since the last call, in order."""
        for item in self._engine.downlink_news():
            if isinstance(item, ReportedState):
                await self.reported(client, item)
            else:
                await self.error(client, item)

    async def prediction(self, client: aiomqtt.Client, prediction: Prediction) -> None:
        await publish(client, self.topic("prediction"), prediction.to_json())
