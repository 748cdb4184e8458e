"""Exceptions of the energy model; the tree of :mod:`device.errors` goes on::

    EnergyError                         every error raised by ``device.energy``
    ├── ProfileError (ValueError)       a hardware profile file that is missing, unreadable or
    │   │                               invalid
    │   ├── ChemistryError              a battery chemistry profile that is invalid or has a
    │   │                               number without a source
    │   └── RadioError                  a radio profile that is invalid or has a number without
    │                                   a source
    ├── CostConfigError (ValueError)    a cost configuration that makes no sense
    ├── BatteryStateError (ValueError)  a saved battery or lifetime state that cannot be restored
    ├── TraceError (ValueError)         an irradiance or temperature trace, or a harvest source,
    │                                   that cannot be read (the message names the row)
    └── PolicyError (ValueError)        an energy-aware learning policy that cannot be parsed

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


class ChemistryError(ProfileError):
    """A battery chemistry profile that cannot be loaded; the message names the file and field."""


class RadioError(ProfileError):
    """A radio profile that cannot be loaded; the message names the file and field."""


class TraceError(EnergyError, ValueError):
    """A trace (irradiance, temperature) or harvest source that cannot be read; the message
    names the file and the row."""


class PolicyError(EnergyError, ValueError):
    """An energy-aware learning policy that cannot be parsed; the message names it."""


__all__ = [
    "BatteryStateError",
    "ChemistryError",
    "CostConfigError",
    "EnergyError",
    "PolicyError",
    "ProfileError",
    "RadioError",
    "TraceError",
]
