"""Exceptions of the latent-replay memory.

::

    ReplayError                      every error raised by ``device.learning.replay``
    ├── QuantizationError (ValueError)   bad latents, codes or bit width
    ├── ReplayConfigError (ValueError)   a memory opened with another capacity/bits/shape
    ├── ReplayStateError                 misuse: update outside a transaction, sampling nothing,
    │                                    a table that does not hold what the memory wrote
    └── ReplayStorageError               SQLite could not read or write the replay table (disk
                                         full, I/O error): the caller's store retries, never skips
"""

from __future__ import annotations

from device.errors import DeviceError


class ReplayError(DeviceError):
    """Base class of every error raised by :mod:`device.learning.replay`."""


class QuantizationError(ReplayError, ValueError):
    """Latents, codes or a bit width that cannot be quantized, packed or unpacked."""


class ReplayConfigError(ReplayError, ValueError):
    """The stored memory was created with another capacity, bit width or latent shape."""


class ReplayStateError(ReplayError):
    """The memory was used in a way its state does not allow, or its table is inconsistent."""


class ReplayStorageError(ReplayError):
    """SQLite refused to read or write the replay table (disk full, I/O error, read-only).

    A storage failure, not a bad event: the node's store turns it into a ``StoreError``, so the
    batch is kept and retried, never committed as failed.
    """
