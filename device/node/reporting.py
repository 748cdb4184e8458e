"""What a node says about itself: the telemetry of a learning event and the retained status.

Pure builders of :mod:`dataset_stream.protocol` messages from the node's parts and live state;
no I/O. :class:`EventFacts` is what one batch did, as the learning job measured it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

from dataset_stream.protocol import (
    PER_CLASS_CAP,
    BatteryState,
    ClassMetrics,
    ErrorMessage,
    ReplayStats,
    Status,
    Telemetry,
)
from device.energy import Battery, LifetimeEstimator
from device.learning.inference import InferenceCounters
from device.learning.learner import Evaluation
from device.node.parts import NodeParts
from device.node.persistence import LiveState

__all__ = [
    "EventFacts",
    "battery_state",
    "by_class",
    "lifetime_h",
    "status",
    "telemetry",
    "telemetry_of",
]


@dataclass(frozen=True, slots=True)
class EventFacts:
    """What one batch did to the node, committed, before it is worded as telemetry.

    learned: False when the battery could not pay (the node browned out); samples: the new
    samples learned (0 when not learned); latency_s / energy_j: by stage, on the emulated
    hardware; host_s: wall time the emulator spent; inferences: the inference counters as they
    stood before the event (their ``since_*`` part is what it reports); classes: the
    long-horizon metrics after it; paused: committed without learning (an operator turned
    learning off), reported as state ``idle``. policy: what the node's energy-aware policy
    made of it (``full``, ``reduced`` or ``skipped``; None under the ``always`` policy);
    refusal: the ``energy_policy`` error that answers a skipped one instead of telemetry (or
    the ``deferred`` one that answers a batch held for the sun); dropped: the ``energy_policy``
    errors of held batches dropped for good to make room for it; back_on: the harvest brought
    a depleted node back and it learned this event; measured_events: the learned-event count
    at which ``evaluation`` was measured (an older one when carried; None without one).
    """

    seq: int
    t: float
    learned: bool
    samples: int
    evaluation: Evaluation | None
    latency_s: Mapping[str, float]
    energy_j: Mapping[str, float]
    host_s: float
    inferences: InferenceCounters
    classes: ClassMetrics | None = None
    paused: bool = False
    policy: str | None = None
    refusal: ErrorMessage | None = None
    back_on: bool = False
    dropped: tuple[ErrorMessage, ...] = ()
    measured_events: int | None = None


def battery_state(battery: Battery) -> BatteryState:
    return BatteryState(soc=battery.soc, remaining_j=battery.remaining_j)


def lifetime_h(lifetime: LifetimeEstimator, battery: Battery) -> float | None:
    """Projected remaining hours; None when infinite (JSON has no infinity)."""
    hours = lifetime.lifetime_h(battery)
    return hours if math.isfinite(hours) else None


def telemetry(parts: NodeParts, live: LiveState, facts: EventFacts) -> Telemetry:
    """The telemetry of the event ``facts`` describes, read once it is committed."""
    preq = live.prequential
    return telemetry_of(
        parts,
        facts,
        battery=live.battery,
        lifetime=live.lifetime,
        events=live.state.events_applied,
        gaps=live.state.gaps,
        prequential=(preq.accuracy, preq.n),
    )


def telemetry_of(
    parts: NodeParts,
    facts: EventFacts,
    *,
    battery: Battery,
    lifetime: LifetimeEstimator,
    events: int,
    gaps: int,
    prequential: tuple[float | None, int],
) -> Telemetry:
    """The telemetry of ``facts`` with the node's figures given: the committed ones
    (:func:`telemetry`), or the ones an event is about to commit (a draft, to price the
    message at its encoded size before it is sent)."""
    evaluation = facts.evaluation
    return Telemetry(
        device=parts.device_id,
        seq=facts.seq,
        t=facts.t,
        state="learning"
        if facts.learned
        else "idle"
        if facts.paused or facts.refusal is not None
        else "depleted",
        samples=facts.samples,
        accuracy=None if evaluation is None else evaluation.accuracy,
        latency_s=facts.latency_s,
        energy_j=facts.energy_j,
        battery=battery_state(battery),
        lifetime_h=lifetime_h(lifetime, battery),
        replay=ReplayStats.from_dict(parts.memory.stats()),
        host_s=facts.host_s,
        events=events,
        gaps=gaps,
        accuracy_by_class=by_class(parts, evaluation),
        inferences=facts.inferences.since_count,
        inference_energy_j=facts.inferences.since_energy_j,
        prequential_accuracy=prequential[0],
        prequential_n=prequential[1],
        classes=facts.classes,
        accuracy_events=facts.measured_events if parts.settings.eval_every > 1 else None,
        extra={} if facts.policy is None else {"policy": facts.policy},
    )


def by_class(parts: NodeParts, evaluation: Evaluation | None) -> dict[int, float] | None:
    """The accuracy of each class, for a model of at most :data:`PER_CLASS_CAP` classes (a
    message stays bounded whatever the model); None otherwise or without an evaluation."""
    if evaluation is None or parts.bundle.num_classes > PER_CLASS_CAP:
        return None
    return dict(evaluation.per_class)


def status(
    parts: NodeParts,
    live: LiveState,
    state: str,
    reason: str | None = None,
    accuracy: float | None = None,
    online_since: float | None = None,
    *,
    forgetting: float | None = None,
    accuracy_by_class: dict[int, float] | None = None,
) -> Status:
    """The retained ``status`` message (``depleted`` wins over ``idle``/``learning``);
    ``accuracy`` and ``forgetting``: the last ones measured, if any (the node does not evaluate
    for a status, but for the factory model before its first event: then with
    ``accuracy_by_class``); ``online_since``: when the connection it is published on was made."""
    if live.battery.depleted and state in ("idle", "learning"):
        state = "depleted"
    sim_time = live.state.sim_time
    return Status(
        state=state,
        device=parts.device_id,
        t=sim_time if sim_time is not None else time.time(),
        last_seq=live.state.last_seq,
        events=live.state.events_applied,
        gaps=live.state.gaps,
        battery=battery_state(live.battery),
        lifetime_h=lifetime_h(live.lifetime, live.battery),
        replay=ReplayStats.from_dict(parts.memory.stats()),
        model=parts.store.meta.model_id,
        reason=reason,
        accuracy=accuracy,
        online_since=online_since,
        accuracy_by_class=accuracy_by_class,
        forgetting=forgetting,
    )
