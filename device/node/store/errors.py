"""Exceptions of the node's state store.

::

    StoreError                    every error raised by ``device.node.store`` (SQLite errors
    wrapped)
    ├── ModelMismatchError        the state file belongs to another model (or device)
    └── StoreCorruptError         the file is not a vega-emu state file, or holds bad values
"""

from __future__ import annotations

from device.errors import DeviceError


class StoreError(DeviceError):
    """Base class of every error raised by :mod:`device.node.store`."""


class ModelMismatchError(StoreError):
    """The state file was created for another model id or device id."""


class StoreCorruptError(StoreError):
    """The state file cannot be read as a vega-emu node state."""
