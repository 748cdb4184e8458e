"""Exceptions of the node's state store; the tree of :mod:`device.errors` goes on::

    StoreError                           every error of the state file (SQLite errors wrapped)
    ├── ModelMismatchError               the state file belongs to another model (or device)
    └── StoreCorruptError                the file is not a vega-emu state file, or holds bad
                                         values

    ReplayError                          device.learning.replay.errors
    ├── ReplayConfigError (ValueError)   a memory opened with another capacity/bits/shape
    ├── ReplayStateError                 misuse: update outside a transaction, sampling nothing,
    │                                    a table that does not hold what the memory wrote
    └── ReplayStorageError               SQLite could not read or write the replay table (disk
                                         full, I/O error): the store retries, never skips

The replay memory's errors derive from :class:`~device.learning.replay.errors.ReplayError`, so
``except ReplayError`` catches every error about latent replays, quantization included.
"""

from __future__ import annotations

from device.errors import DeviceError
from device.learning.replay.errors import ReplayError


class StoreError(DeviceError):
    """Base class of every error raised by :mod:`device.node.store`."""


class ModelMismatchError(StoreError):
    """The state file was created for another model id or device id."""


class StoreCorruptError(StoreError):
    """The state file cannot be read as a vega-emu node state."""


class ReplayConfigError(ReplayError, ValueError):
    """The stored memory was created with another capacity, bit width or latent shape."""


class ReplayStateError(ReplayError):
    """The memory was used in a way its state does not allow, or its table is inconsistent."""


class ReplayStorageError(ReplayError):
    """SQLite refused to read or write the replay table (disk full, I/O error, read-only).

    A storage failure, not a bad event: the node's store turns it into a ``StoreError``, so the
    batch is kept and retried, never committed as failed.
    """


__all__ = [
    "ModelMismatchError",
    "ReplayConfigError",
    "ReplayStateError",
    "ReplayStorageError",
    "StoreCorruptError",
    "StoreError",
]
