"""What the publisher and ``--dump`` send: payloads built from scenario events, and the tally."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dataset_stream.protocol import encode_batch, encode_eval
from dataset_stream.scenarios import Event, Scenario

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class StreamStats:
    """What a stream run delivered."""

    devices: int
    total: int
    sent: int
    acked: int
    rejected: int
    eval_sent: int
    elapsed_s: float
    stalled: tuple[str, ...] = ()


def batch_payload(scenario: Scenario, event: Event, *, t0: float, cadence: float) -> bytes:
    """The wire payload of ``event``: ``seq`` and ``t = t0 + seq * cadence`` in the metadata."""
    extra = {
        "scenario": scenario.name,
        "classes": ",".join(map(str, event.classes)),
        "sessions": ",".join(map(str, event.sessions)),
    }
    return encode_batch(
        event.x,
        event.y,
        seq=event.seq,
        t=t0 + event.seq * cadence,
        source=scenario.source,
        extra=extra,
    )


def eval_payload(scenario: Scenario) -> bytes:
    """The wire payload of the scenario's eval set."""
    x, y = scenario.eval_set
    return encode_eval(x, y, source=scenario.source, extra={"scenario": scenario.name})
