"""The node's persistent state: weights, latent-replay memory, counters and event log in SQLite."""

from device.node.store.errors import (
    ModelMismatchError,
    ReplayConfigError,
    ReplayStateError,
    ReplayStorageError,
    StoreCorruptError,
    StoreError,
)
from device.node.store.node_store import NodeStore
from device.node.store.records import DesiredRecord, EventRecord, NodeState, StoreMeta
from device.node.store.replay import ReplayConfig, ReplayMemory
from device.node.store.snapshots import BatterySnapshot, EnergyTotals, LifetimeSnapshot
from device.node.store.transaction import EventTransaction

__all__ = [
    "BatterySnapshot",
    "DesiredRecord",
    "EnergyTotals",
    "EventRecord",
    "EventTransaction",
    "LifetimeSnapshot",
    "ModelMismatchError",
    "NodeState",
    "NodeStore",
    "ReplayConfig",
    "ReplayConfigError",
    "ReplayMemory",
    "ReplayStateError",
    "ReplayStorageError",
    "StoreCorruptError",
    "StoreError",
    "StoreMeta",
]
