"""Exceptions of the broker package.

BrokerError
 ├── BrokerURLError        a broker URL that cannot be parsed or is unsafe
 ├── BrokerStartError      a broker that did not come up (missing binary, port in use, ...)
 └── MosquittoNotFound     the ``mosquitto`` binary is not installed
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
