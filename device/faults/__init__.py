"""Injected faults: what they are, which devices they hit, and when (pure and seeded).

A fleet spec's ``[[fault]]`` tables (:func:`parse_faults`) make a :class:`FaultPlan`; each device
gets its :class:`DeviceFaults`, a schedule in simulated time the node asks as its batches
arrive, and, for ``network`` faults, a :class:`NetworkFilter` for its inbox. The node carries
the faults out and publishes each one (docs/faults.md).
"""

from device.faults.kinds import KINDS, NODE_CLOCK_KINDS, FaultSpec, NetworkImpairment
from device.faults.network import Delivery, NetworkFilter
from device.faults.parse import FAULT_KEYS, parse_faults
from device.faults.schedule import DeviceFaults, Fault, FaultPlan, occurrences

__all__ = [
    "FAULT_KEYS",
    "KINDS",
    "NODE_CLOCK_KINDS",
    "Delivery",
    "DeviceFaults",
    "Fault",
    "FaultPlan",
    "FaultSpec",
    "NetworkFilter",
    "NetworkImpairment",
    "occurrences",
    "parse_faults",
]
