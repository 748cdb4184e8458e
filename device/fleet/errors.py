"""Exceptions of the fleet (spec, worker processes); the tree of :mod:`device.errors` goes on::

    FleetError                       every error of ``device.fleet``; raised as itself when a
    │                                worker could not start, or failed in a way a restart cannot
    │                                mend
    └── FleetSpecError (ValueError)  a fleet spec that cannot be used (the message names the
        │                            file, class and key)
        └── DistributionError            a distribution table that cannot be drawn from

A gateway that cannot go on raises :class:`device.errors.NodeError` to the nodes attached to it,
as a node's own session would.
"""

from __future__ import annotations

from device.errors import DeviceError


class FleetError(DeviceError):
    """A fleet worker could not start, or failed in a way a restart cannot mend."""


class FleetSpecError(FleetError, ValueError):
    """A fleet spec that cannot be used; the message names the file, class and key."""


class DistributionError(FleetSpecError):
    """A distribution table that cannot be drawn from; the message names the key."""


__all__ = ["DistributionError", "FleetError", "FleetSpecError"]
