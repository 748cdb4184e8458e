"""The one MQTT session helper every vega-emu client uses (node, gateway, monitor, stream, bridge).

A :class:`Session` says how a client talks to its broker: where (a
:class:`~broker.url.BrokerURL`, with its TLS and credentials), under which client id, how long a
network wait may take, whether the broker keeps the session while the client is away, and its
last will. From it come the client (:meth:`Session.client`), a connected and subscribed client
(:meth:`Session.open`), and the end of the session at the broker (:meth:`Session.end`).
:func:`subscribe` checks every grant of a SUBACK: a refused filter raises
:class:`~broker.errors.SubscriptionRefused`, never a client that silently hears nothing.
:func:`close` disconnects whatever state the connection is in. Every publish goes through
:func:`publish`, which never loses a cancellation (see :func:`kept_cancel`).

The loop that connects again after a loss is :class:`broker.reconnect.Reconnect` (with
:class:`broker.backoff.Backoff`); the give-up rule for refusals that retrying cannot fix is
:class:`broker.refusals.Refusals`. Messages are acknowledged after their commit with
:func:`ack` on a client built with ``manual_ack`` (:func:`persistent_client`).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, TypeVar

import aiomqtt

from broker.errors import SessionError, SubscriptionRefused
from broker.url import BrokerURL

#: Topic filters per SUBSCRIBE packet unless a client says otherwise (a packet for thousands of
#: filters is hundreds of KB).
SUBSCRIBE_CHUNK: Final = 500

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Session:
    """Where and as whom a client connects; see the module docstring.

    ``persistent``: clean session off, so the broker keeps the subscriptions and queues QoS 1
    messages while the client is away (end it with :meth:`end` when done); else a clean session.
    ``timeout_s`` bounds every network wait of the client (connect, subscribe, publish, close).
    """

    broker: BrokerURL
    client_id: str
    timeout_s: float = 10.0
    persistent: bool = True
    will: aiomqtt.Will | None = None

    def __post_init__(self) -> None:
        if not self.client_id:
            raise ValueError("a session needs a client id")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s}")

    def client(self, *, manual_ack: bool = False, **kwargs: Any) -> aiomqtt.Client:
        """A client for this session, not yet connected. ``manual_ack``: QoS 1 messages are
        acknowledged only through :func:`ack` (see :func:`enable_manual_ack`); ``kwargs`` go
        to :class:`aiomqtt.Client` (``max_inflight_messages``, ...)."""
        client = aiomqtt.Client(
            **self.broker.client_kwargs(),
            identifier=self.client_id,
            clean_session=not self.persistent,
            will=self.will,
            timeout=self.timeout_s,
            **kwargs,
        )
        # before connecting: a resumed session's queued messages arrive right after CONNACK,
        # and paho acknowledges on receipt until told otherwise -- a kill then loses them
        if manual_ack and not enable_manual_ack(client):
            raise SessionError("this paho-mqtt cannot acknowledge manually: no exactly-once")
        return client

    async def open(
        self,
        filters: Sequence[tuple[str, int]],
        *,
        chunk: int = SUBSCRIBE_CHUNK,
        pending_calls_threshold: int | None = None,
    ) -> aiomqtt.Client:
        """A connected client, subscribed to ``filters`` (``(filter, qos)``), every grant
        checked. Raises what connecting raises (``MqttError``, ``OSError``, ``TimeoutError``)
        or :class:`SubscriptionRefused`; the client is closed then. ``pending_calls_threshold``:
        aiomqtt's warning level for calls in flight, for a client that bounds them itself."""
        client = self.client()
        if pending_calls_threshold is not None:
            client.pending_calls_threshold = pending_calls_threshold
        async with asyncio.timeout(self.timeout_s):
            await kept_cancel(client.__aenter__())
        try:
            await subscribe(
                client, filters, within_s=self.timeout_s, chunk=chunk, broker=self.broker
            )
        except BaseException:
            await close(client, within_s=self.timeout_s)
            raise
        return client

    async def end(self) -> None:
        """Connect once with a clean session: the broker drops what it kept under this client
        id (subscriptions, queued messages). Raises what connecting raises."""
        clean = replace(self, persistent=False, will=None)
        async with asyncio.timeout(self.timeout_s), clean.client():
            pass


async def subscribe(
    client: aiomqtt.Client,
    filters: Sequence[tuple[str, int]],
    *,
    within_s: float,
    broker: object,
    chunk: int = SUBSCRIBE_CHUNK,
) -> None:
    """Subscribe to ``filters`` in SUBSCRIBE packets of at most ``chunk`` filters, each
    acknowledged within ``within_s``; any filter the broker refuses raises
    :class:`SubscriptionRefused` naming it and ``broker`` (after the whole list was asked)."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    refused: list[str] = []
    for start in range(0, len(filters), chunk):
        part = filters[start : start + chunk]
        async with asyncio.timeout(within_s):
            granted = await kept_cancel(client.subscribe(list(part)))
        codes = list(granted) + [0x80] * (len(part) - len(granted))  # a short SUBACK: refused
        refused += [where for (where, _), code in zip(part, codes, strict=False) if _refused(code)]
    if refused:
        raise SubscriptionRefused(broker, refused)


async def kept_cancel(call: Awaitable[T]) -> T:
    """``await call``, except that a cancellation of the current task that lands while ``call``
    completes is raised (``CancelledError``), not lost.

    aiomqtt waits for every acknowledgement (CONNACK, SUBACK, PUBACK) with ``asyncio.wait_for``,
    which on Python 3.11 returns the result and drops the cancellation when both arrive in the
    same turn of the loop (CPython gh-86296): a publishing loop cancelled once went on
    publishing about one time in four. The task still counts the request
    (:meth:`asyncio.Task.cancelling`), which is what is checked here.
    """
    task = asyncio.current_task()
    before = task.cancelling() if task is not None else 0
    result = await call
    if task is not None and task.cancelling() > before:
        raise asyncio.CancelledError
    return result


async def publish(
    client: aiomqtt.Client,
    where: str,
    payload: bytes | str,
    *,
    qos: int = 1,
    retain: bool = False,
    timeout_s: float | None = None,
) -> None:
    """``client.publish`` that never loses a cancellation (:func:`kept_cancel`); ``timeout_s``
    bounds the wait for the PUBACK (the client's own timeout when None)."""
    await kept_cancel(client.publish(where, payload, qos=qos, retain=retain, timeout=timeout_s))


async def close(client: aiomqtt.Client, *, within_s: float) -> None:
    """Disconnect ``client`` if it still is connected; never raises for a dead connection."""
    with contextlib.suppress(aiomqtt.MqttError, OSError):
        async with asyncio.timeout(within_s):
            await client.__aexit__(None, None, None)


def persistent_client(
    broker: BrokerURL, identifier: str, will: aiomqtt.Will, timeout_s: float, **kwargs: Any
) -> aiomqtt.Client:
    """A client on a persistent session (clean session off) that acknowledges QoS 1 messages
    only through :func:`ack`, after the commit: what exactly-once rests on (a node's session or
    a gateway's)."""
    session = Session(broker, identifier, timeout_s=timeout_s, will=will)
    return session.client(manual_ack=True, **kwargs)


def new_client_id(role: str) -> str:
    """A client id of its own for each run, e.g. ``vega-stream-3f9c0a1b2c`` (at most 23
    characters for ``stream`` and ``monitor``: what every MQTT 3.1.1 broker must accept).

    A persistent session is keyed by the client id, and a broker drops the older of two
    connections that share one: two streams (or a stream and a monitor) must never collide.
    """
    return f"vega-{role}-{secrets.token_hex(5)}"


def enable_manual_ack(client: aiomqtt.Client) -> bool:
    """Acknowledge QoS 1 messages only when :func:`ack` is called (after the commit).

    aiomqtt 2.x has no public switch for this; paho-mqtt, which it wraps, has. Without it a
    message is acknowledged on receipt and a crash before the commit would lose it; with it the
    broker redelivers an unacknowledged batch after a reconnect and the node's ``seq`` check
    makes the redelivery harmless. Call it *before* connecting: a persistent session's queued
    messages arrive right after CONNACK. Returns False if the wrapped client has no such switch.
    """
    paho: Any = getattr(client, "_client", None)
    if paho is None or not hasattr(paho, "manual_ack_set"):
        return False
    paho.manual_ack_set(True)
    return True


def ack(client: aiomqtt.Client, message: aiomqtt.Message) -> None:
    """Send the PUBACK of ``message`` (paho makes it a no-op for QoS 0 or without manual ack)."""
    paho: Any = getattr(client, "_client", None)
    if paho is not None:
        paho.ack(message.mid, message.qos)


def _refused(code: Any) -> bool:
    """A SUBACK failure: 0x80 (MQTT 3.1.1) or a reason code of 0x80 and above (MQTT 5)."""
    value = getattr(code, "value", code)
    return isinstance(value, int) and value >= 0x80


__all__ = [
    "SUBSCRIBE_CHUNK",
    "Session",
    "ack",
    "close",
    "enable_manual_ack",
    "kept_cancel",
    "new_client_id",
    "persistent_client",
    "publish",
    "subscribe",
]
