"""Exceptions of the energy model; the tree of :mod:`device.errors` goes on::

    EnergyError                         every error raised by ``device.energy``
    ├── ProfileError (ValueError)       a hardware profile file that is missing, unreadable or
    │                                   invalid
    ├── CostConfigError (ValueError)    a cost configuration that makes no sense
    └── BatteryStateError (ValueError)  a saved battery or lifetime state that cannot be restored

Each is also a ``ValueError``: it describes a bad value (a file, a setting, a saved state).
"""

from __future__ import annotations

from device.errors import DeviceError


class EnergyError(DeviceError):
    """Base class of every error raised by :mod:`device.energy`."""


class ProfileError(EnergyError, ValueError):
    """A profile that cannot be loaded; the message names the file and the bad key."""


class CostConfigError(EnergyError, ValueError):
    """A cost configuration value out of range; the message names the value."""


class BatteryStateError(EnergyError, ValueError):
    """A serialised battery or lifetime state that is missing keys or holds bad values."""


__all__ = ["BatteryStateError", "CostConfigError", "EnergyError", "ProfileError"]
