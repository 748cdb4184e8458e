"""What the publisher and ``--dump`` send: payloads built from scenario events, and the tally."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from dataset_stream.answers import IgnoredMessages
from dataset_stream.continuation import SeqPlan
from dataset_stream.outcome import Delivery
from dataset_stream.protocol import EvalRef, StreamSummary, encode_batch, encode_eval
from dataset_stream.scenarios import Event, Scenario

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class LinkStats:
    """The stream's broker connection over a run.

    ``reconnects``: connections made after the first; ``outage_s``: seconds spent without one;
    ``late``: events whose time passed while the stream had no broker, published at once when
    it came back (``max_late_s``: the latest of them, seconds after its time); ``republished``:
    batches published again after a reconnect, or when their device came back online, because
    they had no answer yet; ``resent``: batches published again because no answer came in time
    (:class:`~dataset_stream.outstanding.ResendPolicy`).
    """

    reconnects: int = 0
    outage_s: float = 0.0
    late: int = 0
    max_late_s: float = 0.0
    republished: int = 0
    resent: int = 0


@dataclass(frozen=True, slots=True)
class StreamStats:
    """What a stream run delivered.

    ``sent``: distinct batches published; ``acked``: learned (``duplicates`` of them answered
    ``duplicate``: learned before); ``rejected``: refused or skipped, ``lost`` of them skipped
    in a gap (they never reached the node in time), ``delivery.skipped`` by the node's energy
    policy; ``stalled``: devices that stopped
    answering; ``ignored``: messages received but not acted on; ``infer_sent``: inference
    requests published (at most once; not accounted); ``delivery``: every batch and what
    became of it, the unanswered ones by device (None for ``--dump``); ``drain_s``: seconds
    spent at the end waiting for the last answers; ``plan``: the seqs sent each device
    (None for ``--dump``).
    """

    devices: int
    total: int
    sent: int
    acked: int
    rejected: int
    eval_sent: int
    elapsed_s: float
    stalled: tuple[str, ...] = ()
    lost: int = 0
    link: LinkStats = field(default_factory=LinkStats)
    ignored: IgnoredMessages = field(default_factory=IgnoredMessages)
    infer_sent: int = 0
    duplicates: int = 0
    delivery: Delivery | None = None
    drain_s: float = 0.0
    plan: SeqPlan | None = None

    @property
    def complete(self) -> bool:
        """Every planned batch was sent and answered by its node."""
        return self.delivery is not None and self.delivery.complete

    def summary(self, wall_s: float) -> StreamSummary:
        """The stream's part of a run summary, for a run of ``wall_s`` seconds."""
        return StreamSummary(
            sent=self.sent,
            acked=self.acked,
            rejected=self.rejected,
            wall_s=round(wall_s, 3),
            stalled=self.stalled,
            reconnects=self.link.reconnects,
            lost=self.lost,
            outage_s=round(self.link.outage_s, 3),
            late=self.link.late,
            republished=self.link.republished,
            invalid=self.ignored.invalid,
            foreign=self.ignored.foreign,
            infer_sent=self.infer_sent,
            duplicates=self.duplicates,
            unanswered=self.delivery.unanswered_count if self.delivery is not None else 0,
            unsent=self.delivery.unsent_count if self.delivery is not None else 0,
            resent=self.link.resent,
            skipped=self.delivery.skipped if self.delivery is not None else 0,
            deferred=self.delivery.deferred if self.delivery is not None else 0,
        )


def batch_payload(
    scenario: Scenario, event: Event, *, t0: float, cadence_s: float, with_ids: bool = False
) -> bytes:
    """The wire payload of ``event``: ``seq``, ``t = t0 + (seq - 1) * cadence_s`` in the metadata;
    ``with_ids``: each sample named by its dataset row (``ids``, for prequential scoring)."""
    extra = {
        "scenario": scenario.name,
        "classes": ",".join(map(str, event.classes)),
        "sessions": ",".join(map(str, event.sessions)),
    }
    return encode_batch(
        event.x,
        event.y,
        seq=event.seq,
        t=t0 + (event.seq - 1) * cadence_s,
        source=scenario.source,
        ids=event.indices.astype(np.int64) if with_ids else None,
        extra=extra,
    )


def eval_payload(scenario: Scenario) -> bytes:
    """The wire payload of the scenario's eval set, byte for byte the same on every call (its
    SHA-256 names it on the wire when it is shared by reference: :func:`canonical_header`)."""
    x, y = scenario.eval_set
    payload = encode_eval(x, y, source=scenario.source, extra={"scenario": scenario.name})
    return canonical_header(payload)


def eval_ref(scenario: Scenario, payload: bytes) -> EvalRef:
    """The reference a device gets to ``payload``, the scenario's shared eval set."""
    return EvalRef.of(payload, source=scenario.source, scenario=scenario.name)


def canonical_header(payload: bytes) -> bytes:
    """``payload`` (safetensors) with its header's keys sorted: the encoder writes the
    metadata in an order that changes from one process to the next, which would give the same
    set another digest on every run (and leave the old one retained at the broker). The header
    keeps its length (only the order changes), so the tensor data does not move."""
    size = int.from_bytes(payload[:8], "little")
    header = json.loads(payload[8 : 8 + size])
    text = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    if len(text) > size:  # never for the encoder's compact header; leave it as it is
        return payload
    return payload[:8] + text.ljust(size) + payload[8 + size :]
