"""One emulated VEGA node: its MQTT session, the engine that learns and answers, its state.

- :class:`Node` (``async with Node(...)``): the node's lifetime and the supervision of its
  loop, over its parts: its connection (:mod:`device.node.session`: a persistent MQTT session of
  its own, or a fleet's shared connection), one message at a time (:mod:`device.node.dispatch`),
  batches in ``seq`` order, exactly once (:mod:`device.node.sequencer`), what it publishes
  (:mod:`device.node.outbox`);
- :class:`SeqBook` (:mod:`device.node.delivery`): the delivery rules, sans I/O: learn, hold,
  duplicate, stale, gap, too far ahead;
- :class:`SharedConnection` and :class:`Inbox`: how a node reads a connection it shares;
- :class:`NodeEngine`: one learning event or one inference, blocking and transactional, with no
  MQTT and no asyncio; it builds on the numeric core (:mod:`device.learning`), the energy model
  (:mod:`device.energy`) and the model bundle (:mod:`device.model`);
- :class:`NodeSettings` and its groups: read once at the edge, passed down as one frozen value;
- :mod:`device.node.store`: the node's SQLite state (weights, latent-replay memory, counters,
  event log), one transaction per event.
"""

from device.node.delivery import SeqBook
from device.node.engine import NodeEngine
from device.node.inbox import Inbox, SharedConnection
from device.node.node import Node, TelemetryHook
from device.node.settings import ConnectSettings, DeliverySettings, NodeSettings, ReplaySettings
from device.node.store import NodeState, NodeStore

__all__ = [
    "ConnectSettings",
    "DeliverySettings",
    "Inbox",
    "Node",
    "NodeEngine",
    "NodeSettings",
    "NodeState",
    "NodeStore",
    "ReplaySettings",
    "SeqBook",
    "SharedConnection",
    "TelemetryHook",
]
