"""What ``vega-emu stream --infer-rate R`` sends between learning events (pure planning).

Samples to classify are the samples of the device's **next** learning event, sent unlabelled in
the cadence interval before that event, each named by its dataset row (``ids``); the batch then
carries the same ``ids`` with the labels, so the node scores its predictions before it learns
them (prequential accuracy, test-then-train). The held-out eval set never goes to ``infer``.

The interval before event ``j`` (``j >= 2``) starts at event ``j - 1``'s time ``t``; it has one
message per simulated second ``k`` (``t + k``, ``0 <= k < cadence_s``) holding
``floor(R (k + 1)) - floor(R k)`` samples (seconds with none send nothing), so ``R`` samples per
simulated second on average. The interval's samples are the event's rows in order, wrapping
round when the interval needs more than the event has. A message's inference ``seq`` is
``(j - 2) * messages_per_interval + m + 1`` (``m``: its index in the interval): the same stream
always gives a request the same seq, so a node answers a re-published request again without
charging it twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dataset_stream.protocol import encode_infer
from dataset_stream.scenarios import Event, Scenario


@dataclass(frozen=True, slots=True)
class InferSchedule:
    """``rate`` samples per simulated second within intervals of ``cadence_s`` simulated seconds."""

    rate: float
    cadence_s: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(f"infer rate must be a positive number, not {self.rate!r}")
        if not (math.isfinite(self.cadence_s) and self.cadence_s > 0):
            raise ValueError(f"cadence_s must be a positive number, not {self.cadence_s!r}")

    @property
    def seconds(self) -> tuple[tuple[int, int], ...]:
        """``(k, samples)`` of every second ``k`` of an interval that sends a message."""
        out = []
        for k in range(math.ceil(self.cadence_s)):
            n = math.floor(self.rate * (k + 1)) - math.floor(self.rate * k)
            if n:
                out.append((k, n))
        return tuple(out)

    @property
    def messages_per_interval(self) -> int:
        return len(self.seconds)

    def messages(self, events: int) -> int:
        """Inference requests a device gets over a stream of ``events`` learning events."""
        return max(0, events - 1) * self.messages_per_interval

    def payloads(
        self, scenario: Scenario, event: Event, *, t_start: float
    ) -> list[tuple[int, bytes]]:
        """``(k, payload)`` of the interval before ``event`` (``event.seq >= 2``), which starts
        at simulated time ``t_start``; ``k`` is the message's second in the interval."""
        if event.seq < 2:
            raise ValueError("the first learning event has no interval before it")
        rows = event.indices
        out, position = [], 0
        base = (event.seq - 2) * self.messages_per_interval
        for m, (k, n) in enumerate(self.seconds):
            n = min(n, len(rows))  # ids are distinct within a request
            at = (position + np.arange(n)) % len(rows)
            pick = rows[at]
            position += n
            payload = encode_infer(
                event.take(at),
                seq=base + m + 1,
                t=t_start + k,
                source=scenario.source,
                ids=pick.astype(np.int64),
                extra={"scenario": scenario.name},
            )
            out.append((k, payload))
        return out


__all__ = ["InferSchedule"]
