"""Exceptions of the :mod:`broker` package::

    BrokerError                      catch this to catch any of the below
    ├── BrokerURLError (ValueError)  a broker URL that cannot be parsed or is unsafe
    └── BrokerStartError             a broker that did not come up (port in use, no answer, ...)
        └── MosquittoNotFound        the ``mosquitto`` binary is not installed

This module imports nothing from the project.
"""

from __future__ import annotations


class BrokerError(Exception):
    """Base class of every error raised by :mod:`broker`."""


class BrokerURLError(BrokerError, ValueError):
    """A broker URL that cannot be used."""


class BrokerStartError(BrokerError):
    """A broker that did not start or did not accept connections in time."""


class MosquittoNotFound(BrokerStartError):
    """The ``mosquitto`` executable is not on PATH."""


__all__ = ["BrokerError", "BrokerStartError", "BrokerURLError", "MosquittoNotFound"]
