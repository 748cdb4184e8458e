"""How the stream rides out a broker outage: the reconnect policy, its backoff, its client id.

aiomqtt does not reconnect by itself; :class:`~dataset_stream.publisher.StreamPublisher` owns the
loop and takes its settings from a :class:`ReconnectPolicy`. (``broker.session.Backoff`` is the
node's twin of :class:`Backoff`; :mod:`dataset_stream` imports nothing from :mod:`device`.)
"""

from __future__ import annotations

import math
import random
import secrets
from dataclasses import dataclass, field
from typing import Final

#: A connection that ends sooner than this after it was made did not end the outage: the backoff
#: goes on growing and the outage clock keeps running (a broker that accepts and drops at once,
#: or another client taking the same client id over, must not look like a fresh start).
STABLE_AFTER_S: Final = 2.0


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """Backoff between attempts (``initial_s`` doubling up to ``cap_s``, with jitter) and the
    longest outage (``max_outage_s``) the stream waits through before it gives up."""

    initial_s: float = 0.2
    cap_s: float = 5.0
    max_outage_s: float = 300.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.initial_s) and 0 < self.initial_s <= self.cap_s):
            raise ValueError(f"need 0 < initial_s <= cap_s, got {self.initial_s}, {self.cap_s}")
        if not math.isfinite(self.cap_s):
            raise ValueError(f"cap_s must be finite, got {self.cap_s}")
        if not (math.isfinite(self.max_outage_s) and self.max_outage_s > 0):
            raise ValueError(f"max_outage_s must be a positive number, got {self.max_outage_s}")

    def backoff(self, rng: random.Random | None = None) -> Backoff:
        return Backoff(self.initial_s, self.cap_s, rng=rng or random.Random())


@dataclass(slots=True)
class Backoff:
    """Exponential backoff with jitter and a cap: the n-th delay is uniform in [c/2, c],
    ``c = min(cap_s, initial_s * 2**n)``."""

    initial_s: float
    cap_s: float
    rng: random.Random = field(default_factory=random.Random)
    _attempt: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.initial_s * 2.0 ** min(self._attempt, 64))
        self._attempt += 1
        return self.rng.uniform(0.5 * ceiling, ceiling)

    def reset(self) -> None:
        self._attempt = 0


def new_client_id(role: str) -> str:
    """A client id of its own for each run, e.g. ``vega-stream-3f9c0a1b2c`` (at most 23
    characters for ``stream`` and ``monitor``: what every MQTT 3.1.1 broker must accept).

    A persistent session is keyed by the client id, and a broker drops the older of two
    connections that share one: two streams (or a stream and a monitor) must never collide.
    """
    return f"vega-{role}-{secrets.token_hex(5)}"


__all__ = ["STABLE_AFTER_S", "Backoff", "ReconnectPolicy", "new_client_id"]
