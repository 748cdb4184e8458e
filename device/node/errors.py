"""What an injected crash or brown-out raises through a node (docs/faults.md)::

    DeviceRestart (BaseException)    the device's process dies here and starts again from its
    │                                database
    └── PowerLost                        power lost in the middle of a learning event: nothing
                                         of it was committed

:class:`DeviceRestart` derives from ``BaseException`` on purpose, not from
:class:`~device.errors.DeviceError`: it must pass every ``except Exception`` that keeps a node
serving (a batch that fails is skipped as ``failed``; a restart must not be) up to the node's
supervisor, which drops the engine, opens it again from its state file and serves on. The
message in hand is not acknowledged: it comes again, as after a real crash. The node's other
errors are :class:`~device.errors.NodeError` (shared with the gateway) and the store's
(:mod:`device.node.store.errors`).
"""

from __future__ import annotations

__all__ = ["DeviceRestart", "PowerLost"]


class DeviceRestart(BaseException):
    """The device's process dies here and starts again from its database."""


class PowerLost(DeviceRestart):
    """Power was lost in the middle of a learning event: nothing of it was committed."""
