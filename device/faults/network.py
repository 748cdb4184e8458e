"""What a ``network`` fault does to the messages of a node's inbox, decided without I/O.

:class:`NetworkFilter` is fed each message as it arrives (:meth:`NetworkFilter.admit`) and says
what to deliver, in order, each after its delay: nothing (the message is lost), the message, the
message twice (a duplicate), or the message held back to follow the next one (reordering; the
held one comes out with the next arrival, or :meth:`NetworkFilter.release`). Its draws come from
the device's own generator, so a seeded run impairs the same messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from device.faults.kinds import NetworkImpairment

__all__ = ["Delivery", "NetworkFilter"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Delivery(Generic[T]):
    """Hand ``message`` to the node after ``delay_s`` (node's clock); ``copy``: a duplicate,
    already acknowledged with the first."""

    message: T
    delay_s: float = 0.0
    copy: bool = False


class NetworkFilter(Generic[T]):
    """One node's inbox under a :class:`NetworkImpairment`; counts what it did."""

    def __init__(self, impairment: NetworkImpairment, rng: np.random.Generator) -> None:
        self.impairment = impairment
        self._rng = rng
        self._held: T | None = None
        self.lost = self.duplicated = self.reordered = 0

    def _delay_s(self) -> float:
        net = self.impairment
        jitter = float(self._rng.uniform(0.0, net.jitter_s)) if net.jitter_s > 0 else 0.0
        return net.latency_s + jitter

    def admit(self, message: T) -> tuple[list[Delivery[T]], T | None]:
        """What to deliver now, in order, and the message lost (if it was)."""
        net, rng = self.impairment, self._rng
        # one draw of each, always in this order: the decisions do not depend on each other
        lose, dup, hold = rng.random(3)
        delay_s = self._delay_s()
        if lose < net.loss:
            self.lost += 1
            return self.release(), message
        if hold < net.reorder and self._held is None:  # follows the next message
            self.reordered += 1
            self._held = message
            return [], None
        out = [Delivery(message, delay_s)]
        if dup < net.duplicate:
            self.duplicated += 1
            out.append(Delivery(message, 0.0, copy=True))
        return out + self.release(), None

    def release(self) -> list[Delivery[T]]:
        """The message held back for reordering, if any (delivered now)."""
        held, self._held = self._held, None
        return [] if held is None else [Delivery(held)]
