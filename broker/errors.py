"""Exceptions of the :mod:`broker` package::

    BrokerError                      catch this to catch any of the below
    ├── BrokerURLError (ValueError)  a broker URL that cannot be parsed or is unsafe
    ├── BrokerStartError             a broker that did not come up (port in use, no answer, ...)
    │   └── MosquittoNotFound        the ``mosquitto`` binary is not installed
    └── SessionError                 an MQTT session that cannot go on as asked (broker.session)
        ├── SubscriptionRefused      the broker refused a subscription (its ACL does not allow it)
        └── OutageTooLong            no broker for longer than a client's ``max_outage_s``

A client converts a :class:`SessionError` into its own package's error where it enters (the
stream's ``PublishError``, the monitor's ``MonitorError``, ...), keeping it as the cause. This
module imports nothing from the project.
"""

from __future__ import annotations

from collections.abc import Sequence


class BrokerError(Exception):
    """Base class of every error raised by :mod:`broker`."""


class BrokerURLError(BrokerError, ValueError):
    """A broker URL that cannot be used."""


class BrokerStartError(BrokerError):
    """A broker that did not start or did not accept connections in time."""


class MosquittoNotFound(BrokerStartError):
    """The ``mosquitto`` executable is not on PATH."""


class SessionError(BrokerError):
    """An MQTT session that cannot go on as its client asked."""


class SubscriptionRefused(SessionError):
    """The broker refused one or more topic filters of a SUBSCRIBE (a failure code in its
    SUBACK): retrying does not help while its ACL stays as it is. ``refused`` names them."""

    def __init__(self, broker: object, refused: Sequence[str]) -> None:
        self.refused = tuple(refused)
        super().__init__(
            f"the broker at {broker} refused {len(self.refused)} subscription(s), "
            f"e.g. {self.refused[0] if self.refused else '?'}: "
            "does its ACL let this user read them?"
        )


class OutageTooLong(SessionError):
    """No connection to the broker for ``waited_s``, past the client's ``max_outage_s``
    (``limit_s``). The last failure to connect is the ``__cause__``."""

    def __init__(self, broker: object, waited_s: float, limit_s: float) -> None:
        self.waited_s = waited_s
        self.limit_s = limit_s
        super().__init__(f"no broker at {broker} for {waited_s:.0f} s (max outage {limit_s:g} s)")


__all__ = [
    "BrokerError",
    "BrokerStartError",
    "BrokerURLError",
    "MosquittoNotFound",
    "OutageTooLong",
    "SessionError",
    "SubscriptionRefused",
]
