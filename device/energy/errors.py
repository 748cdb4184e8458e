"""Exceptions of the energy package.

EnergyError
 ├── ProfileError        a hardware profile file that is missing, unreadable or invalid
 ├── CostConfigError     a cost configuration that makes no sense (also a ValueError)
 └── BatteryStateError   a persisted battery or lifetime state that cannot be restored
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
