"""The node's persistent state: weights, replay memory, counters and event log in SQLite."""

from device.store.errors import ModelMismatchError, StoreCorruptError, StoreError
from device.store.node_store import NodeStore
from device.store.records import EventRecord, NodeState, StoreMeta
from device.store.transaction import EventTransaction

__all__ = [
    "EventRecord",
    "EventTransaction",
    "ModelMismatchError",
    "NodeState",
    "NodeStore",
    "StoreCorruptError",
    "StoreError",
    "StoreMeta",
]
