"""Exceptions of the latent replays; the tree of :mod:`device.errors` goes on::

    ReplayError                          every error about latent replays
    └── QuantizationError (ValueError)   bad latents, codes or bit width

The SQLite memory that keeps the replays (:mod:`device.node.store.replay`) raises subclasses of
:class:`ReplayError` of its own, defined in :mod:`device.node.store.errors`: this core does no
I/O, so it has no storage errors.
"""

from __future__ import annotations

from device.errors import DeviceError


class ReplayError(DeviceError):
    """Base class of every error about latent replays: quantization here, the memory's storage
    in :mod:`device.node.store.errors`."""


class QuantizationError(ReplayError, ValueError):
    """Latents, codes or a bit width that cannot be quantized, packed or unpacked."""


__all__ = ["QuantizationError", "ReplayError"]
