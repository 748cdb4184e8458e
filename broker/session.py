"""MQTT plumbing shared by nodes, gateways and monitors: reconnect backoff, refusals that
retrying cannot fix, and manual acknowledgement."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from device.errors import NodeError, NodeGaveUp

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Backoff:
    """Exponential backoff with jitter and a cap (aiomqtt does not reconnect by itself)."""

    initial_s: float = 0.2
    cap_s: float = 30.0
    factor: float = 2.0
    rng: random.Random = field(default_factory=random.Random)
    _attempt: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.cap_s:
            raise ValueError(f"need 0 < initial_s <= cap_s, got {self.initial_s}, {self.cap_s}")
        if self.factor < 1:
            raise ValueError(f"factor must be >= 1, got {self.factor}")

    def next_delay(self) -> float:
        """Seconds before the next attempt: uniform in [c/2, c], c = min(cap, initial*factor^n)."""
        ceiling = min(self.cap_s, self.initial_s * self.factor**self._attempt)
        self._attempt += 1
        return self.rng.uniform(0.5 * ceiling, ceiling)

    def reset(self) -> None:
        self._attempt = 0


@dataclass(slots=True)
class Refusals:
    """A client the broker refuses for good (:func:`permanent_failure`): say so once, keep
    trying for ``give_up_s``, then raise :class:`NodeGaveUp`. Any other outcome resets it."""

    who: str
    give_up_s: float
    since: float | None = None  # loop time of the first refusal in a row

    def clear(self) -> None:
        self.since = None

    def failed(self, broker: object, exc: aiomqtt.MqttError, delay: float, now: float) -> None:
        """After a connection failed: one that may pass is logged (a retry in ``delay`` s);
        a refusal counts toward giving up (:class:`NodeGaveUp` once ``give_up_s`` is over)."""
        why = permanent_failure(exc)
        if why is None:
            self.since = None
            log.warning("%s: MQTT %s; reconnecting in %.1f s", self.who, exc, delay)
            return
        if self.since is None:
            self.since = now
            log.error(
                "%s: cannot connect to %s: %s (%s); trying again for %.0f s, then giving up",
                self.who,
                broker,
                why,
                exc,
                self.give_up_s,
            )
        if now - self.since >= self.give_up_s:
            raise NodeGaveUp(
                f"{self.who}: gave up connecting to {broker} after "
                f"{now - self.since:.0f} s: {why} ({exc})"
            )


def persistent_client(
    broker: Any, identifier: str, will: aiomqtt.Will, timeout: float, **kwargs: Any
) -> aiomqtt.Client:
    """A client on a persistent session (clean session off) that acknowledges QoS 1 messages
    only through :func:`ack`, after the commit: what exactly-once rests on (a node's session or
    a gateway's). ``broker`` is a :class:`broker.url.BrokerURL`."""
    client = aiomqtt.Client(
        **broker.client_kwargs(),
        identifier=identifier,
        clean_session=False,
        will=will,
        timeout=timeout,
        **kwargs,
    )
    # before connecting: a resumed session's queued batches arrive right after CONNACK, and
    # paho acknowledges on receipt until told otherwise -- a kill then loses them
    if not enable_manual_ack(client):
        raise NodeError("this paho-mqtt cannot acknowledge manually: no exactly-once")
    return client


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


#: CONNACK refusals that retrying cannot fix (MQTT 3.1.1 codes and their MQTT 5 reason codes).
_PERMANENT_CONNACK = {
    1: "the broker does not speak this MQTT version",
    2: "the broker refused the client id",
    4: "the broker refused the user name or password",
    5: "the broker refused the login (not authorized)",
    132: "the broker does not speak this MQTT version",
    133: "the broker refused the client id",
    134: "the broker refused the user name or password",
    135: "the broker refused the login (not authorized)",
    138: "the broker has banned this client",
    140: "the broker refused the authentication method",
}
#: Socket and TLS failures that retrying cannot fix, by the text aiomqtt keeps of them (it
#: re-raises connection errors as ``MqttError(str(exc))``, dropping their type).
_PERMANENT_TEXT = {
    "Name or service not known": "the broker's host name does not exist",
    "No address associated with hostname": "the broker's host name has no address",
    "CERTIFICATE_VERIFY_FAILED": "the broker's TLS certificate was rejected",
    "WRONG_VERSION_NUMBER": "the broker does not speak TLS on this port (mqtts:// to mqtt?)",
    "certificate verify failed": "the broker's TLS certificate was rejected",
}


def permanent_failure(exc: aiomqtt.MqttError) -> str | None:
    """Why connecting can never succeed as configured (wrong password, unknown host, rejected
    certificate, ...), or ``None`` for a failure that may pass (broker down, network, timeout)."""
    rc = getattr(exc, "rc", None)
    code = getattr(rc, "value", rc)
    if isinstance(exc, aiomqtt.MqttCodeError) and isinstance(code, int):
        return _PERMANENT_CONNACK.get(code)
    text = str(exc)
    return next((why for marker, why in _PERMANENT_TEXT.items() if marker in text), None)


__all__ = [
    "Backoff",
    "Refusals",
    "ack",
    "enable_manual_ack",
    "permanent_failure",
    "persistent_client",
]
