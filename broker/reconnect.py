"""The way back to the broker after a lost connection, for a client that owns its loop.

aiomqtt does not reconnect by itself (its ``docs/reconnection.md``): a client reads messages
until ``MqttError``, closes, then calls :meth:`Reconnect.again` with a function that connects
and subscribes (:meth:`broker.session.Session.open`). ``again`` waits with backoff and jitter
(:class:`~broker.backoff.Backoff`) between attempts, and gives up with
:class:`~broker.errors.OutageTooLong` once the broker has been away longer than the client's
``max_outage_s`` (never, for ``None``).

An outage runs from the loss of the last *stable* connection: one that ends sooner than
:data:`STABLE_AFTER_S` after it was made did not end the outage, so its backoff goes on growing
and its clock keeps running (a broker that accepts and drops at once, or another client taking
the same client id over, must not look like a fresh start each time).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import aiomqtt

from broker.backoff import Backoff
from broker.errors import OutageTooLong

log = logging.getLogger(__name__)

#: A connection that lasted less than this (seconds) did not end the outage before it.
STABLE_AFTER_S: Final = 2.0

T = TypeVar("T")


class Reconnect:
    """One client's reconnect loop and what it cost: ``reconnects`` (connections made after
    the first), ``outage_s`` (seconds spent without one), ``connected_at`` (loop time the
    current connection was made). ``who`` and ``client_id`` name the client in the log."""

    def __init__(
        self,
        backoff: Backoff,
        *,
        broker: object,
        who: str,
        client_id: str,
        max_outage_s: float | None = None,
    ) -> None:
        if max_outage_s is not None and not (math.isfinite(max_outage_s) and max_outage_s > 0):
            raise ValueError(f"max_outage_s must be a positive number or None, not {max_outage_s}")
        self.backoff = backoff
        self.broker = broker
        self.who = who
        self.client_id = client_id
        self.max_outage_s = max_outage_s
        self.reconnects = 0
        self.outage_s = 0.0
        self.connected_at = 0.0
        self._down_since: float | None = None

    def connected(self) -> None:
        """The first connection was made (:meth:`again` notes the later ones itself)."""
        self.connected_at = asyncio.get_running_loop().time()

    async def again(self, connect: Callable[[], Awaitable[T]], cause: BaseException) -> T:
        """The connection was lost (``cause``): call ``connect`` after each backoff delay until
        it returns. A failure to connect (``MqttError``, ``OSError``) is retried; anything else
        ``connect`` raises (a refused subscription) goes through. Raises
        :class:`OutageTooLong`, from the last failure, once the outage passed ``max_outage_s``.
        """
        loop = asyncio.get_running_loop()
        lost_at = loop.time()
        lasted_s = lost_at - self.connected_at
        if self._down_since is None or lasted_s >= STABLE_AFTER_S:
            self._down_since = lost_at
            self.backoff.reset()
        else:
            log.warning(
                "%s: the connection to %s ended %.1f s after it was made (is another client "
                "using the client id %r?)",
                self.who,
                self.broker,
                lasted_s,
                self.client_id,
            )
        log.warning(
            "%s: lost the broker at %s (%s); reconnecting", self.who, self.broker, describe(cause)
        )
        limit_s = self.max_outage_s
        while True:
            waited_s = loop.time() - self._down_since
            if limit_s is not None and waited_s >= limit_s:
                raise OutageTooLong(self.broker, waited_s, limit_s) from cause
            delay_s = self.backoff.next_delay()
            await asyncio.sleep(delay_s if limit_s is None else min(delay_s, limit_s - waited_s))
            try:
                result = await connect()
            except (aiomqtt.MqttError, OSError) as exc:  # the broker is still away
                log.debug("%s: reconnecting to %s: %s", self.who, self.broker, describe(exc))
                cause = exc
                continue
            self.connected_at = loop.time()
            self.reconnects += 1
            outage_s = self.connected_at - lost_at
            self.outage_s += outage_s
            log.warning("%s: reconnected to %s after %.1f s", self.who, self.broker, outage_s)
            return result


def describe(exc: BaseException) -> str:
    """``exc`` and its cause in one line (aiomqtt's "Disconnected during message iteration"
    says more with the paho error behind it)."""
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text += f": {cause}"
    return text


__all__ = ["STABLE_AFTER_S", "Reconnect", "describe"]
