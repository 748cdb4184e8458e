"""Exponential backoff with jitter and a cap: how long a retry loop waits before its next try.

:class:`BackoffPolicy` is the value (first delay, cap, growth factor), checked once when built;
:class:`Backoff` is one loop's state under a policy. Every retry loop of the project uses it: the
MQTT reconnect loops (:mod:`broker.reconnect`, a node's and a gateway's own loops), a node's
store retries and the fleet supervisor's restarts. Without I/O: it only says how long to wait.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Final

_INITIAL_S: Final = 0.2
_CAP_S: Final = 30.0
_FACTOR: Final = 2.0


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """The n-th delay (from 0) is uniform in ``[c/2, c]``, ``c = min(cap_s, initial_s *
    factor**n)``: the jitter keeps many clients that lost one broker from coming back in step."""

    initial_s: float = _INITIAL_S
    cap_s: float = _CAP_S
    factor: float = _FACTOR

    def __post_init__(self) -> None:
        if not (math.isfinite(self.initial_s) and math.isfinite(self.cap_s)):
            raise ValueError(f"backoff delays must be finite, got {self.initial_s}, {self.cap_s}")
        if not 0 < self.initial_s <= self.cap_s:
            raise ValueError(f"need 0 < initial_s <= cap_s, got {self.initial_s}, {self.cap_s}")
        if not (math.isfinite(self.factor) and self.factor >= 1):
            raise ValueError(f"factor must be a finite number >= 1, got {self.factor}")

    def ceiling_s(self, attempt: int) -> float:
        """The longest delay before attempt ``attempt`` (0 for the first retry)."""
        if self.factor <= 1.0:
            return min(self.cap_s, self.initial_s)
        # the exponent stops where the ceiling reaches the cap: never overflows, always gets there
        reaches_cap = math.ceil(math.log(self.cap_s / self.initial_s) / math.log(self.factor))
        return min(self.cap_s, self.initial_s * self.factor ** min(attempt, reaches_cap))


class Backoff:
    """The delays of one retry loop: ``next_delay()`` after each failure, ``reset()`` once it
    worked. ``Backoff(initial_s, cap_s, factor)`` builds its :class:`BackoffPolicy`; a policy
    passed down as a value gives one with :meth:`of`."""

    __slots__ = ("_attempt", "policy", "rng")

    def __init__(
        self,
        initial_s: float = _INITIAL_S,
        cap_s: float = _CAP_S,
        factor: float = _FACTOR,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = BackoffPolicy(initial_s, cap_s, factor)
        self.rng = rng or random.Random()
        self._attempt = 0

    @classmethod
    def of(cls, policy: BackoffPolicy, *, rng: random.Random | None = None) -> Backoff:
        """A fresh loop's state under ``policy``."""
        return cls(policy.initial_s, policy.cap_s, policy.factor, rng=rng)

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt (see :class:`BackoffPolicy`)."""
        ceiling = self.policy.ceiling_s(self._attempt)
        self._attempt += 1
        return self.rng.uniform(0.5 * ceiling, ceiling)

    def reset(self) -> None:
        """The last attempt worked: the next failure starts again from ``initial_s``."""
        self._attempt = 0


__all__ = ["Backoff", "BackoffPolicy"]
