"""The root of every error the :mod:`device` package raises on purpose.

::

    DeviceError                     catch this to catch any of the below
    ├── StoreError                  the node's SQLite state (device.node.store)
    ├── ReplayError                 the latent-replay memory (device.learning.replay)
    ├── ModelError                  model bundles and tools (device.model)
    ├── EnergyError                 profiles, costs, battery (device.energy)
    └── NodeError                   the node itself: a message it cannot handle, a failed loop
        └── NodeGaveUp              the broker refused it for good (credentials, host, certificate)

It imports nothing from the project, so every sub-package can derive from it. Errors of the
other packages have their own roots: :class:`dataset_stream.DatasetStreamError` and
:class:`broker.BrokerError`; the command line turns any of the three into a one-line error.
"""

from __future__ import annotations


class DeviceError(Exception):
    """Base class of every error raised on purpose by :mod:`device`."""


class NodeError(DeviceError):
    """The node could not handle a message or keep its loop running."""


class NodeGaveUp(NodeError):
    """The broker refused the node for longer than its ``give_up_s``: retrying cannot help."""


__all__ = ["DeviceError", "NodeError", "NodeGaveUp"]
