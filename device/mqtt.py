"""MQTT plumbing shared by nodes and monitors: reconnect backoff and manual acknowledgement."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import aiomqtt


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


__all__ = ["Backoff", "ack", "enable_manual_ack"]
