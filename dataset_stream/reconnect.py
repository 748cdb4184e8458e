"""How the stream and the bridge ride out a broker outage: their reconnect policy.

aiomqtt does not reconnect by itself; :class:`~dataset_stream.publisher.StreamPublisher` and the
bridge own the loop (:class:`broker.reconnect.Reconnect`) and take its settings from a
:class:`ReconnectPolicy`: the backoff between attempts and the longest outage they wait through.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from broker.backoff import Backoff, BackoffPolicy
from broker.reconnect import Reconnect


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """Backoff between attempts (``initial_s`` doubling up to ``cap_s``, with jitter) and the
    longest outage (``max_outage_s``) a producer waits through before it gives up."""

    initial_s: float = 0.2
    cap_s: float = 5.0
    max_outage_s: float = 300.0

    def __post_init__(self) -> None:
        BackoffPolicy(self.initial_s, self.cap_s)  # checks them
        if not (math.isfinite(self.max_outage_s) and self.max_outage_s > 0):
            raise ValueError(f"max_outage_s must be a positive number, got {self.max_outage_s}")

    @property
    def backoff_policy(self) -> BackoffPolicy:
        return BackoffPolicy(self.initial_s, self.cap_s)

    def backoff(self, rng: random.Random | None = None) -> Backoff:
        return Backoff.of(self.backoff_policy, rng=rng)

    def reconnect(self, *, broker: object, who: str, client_id: str) -> Reconnect:
        """A reconnect loop under this policy for one client."""
        return Reconnect(
            self.backoff(),
            broker=broker,
            who=who,
            client_id=client_id,
            max_outage_s=self.max_outage_s,
        )


__all__ = ["ReconnectPolicy"]
