"""Values the node reads from and writes to its store (frozen, checked when built)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from device.learning.inference import InferenceCounters
from device.node.store.checks import check_float, check_int, freeze_json
from device.node.store.snapshots import BatterySnapshot, EnergyTotals, LifetimeSnapshot

__all__ = ["OUTCOMES", "DesiredRecord", "EventRecord", "NodeState", "StoreMeta"]

OUTCOMES = ("learned", "depleted", "failed", "paused", "policy", "deferred")


@dataclass(frozen=True, slots=True)
class NodeState:
    """The node's persistent counters: what it has applied, its battery and energy bookkeeping.

    last_seq: the last applied batch ``seq`` (None before the first event);
    events_applied: learning events applied; sim_time: simulated unix time of the last event;
    gaps: seqs skipped because they never arrived;
    battery: the battery as last committed (None until the node first spends energy: a full
    battery of its profile); lifetime: the lifetime estimator as last committed (None until the
    first event or inference: the nominal estimate); energy_totals: joules spent since the file
    was created, by stage; last_latency_s: the emulated duration of the last learning event;
    inference: inference counters and prequential scores.
    """

    last_seq: int | None = None
    events_applied: int = 0
    sim_time: float | None = None
    gaps: int = 0
    battery: BatterySnapshot | None = None
    lifetime: LifetimeSnapshot | None = None
    energy_totals: EnergyTotals = field(default_factory=EnergyTotals)
    last_latency_s: float = 0.0
    inference: InferenceCounters = field(default_factory=InferenceCounters)

    def __post_init__(self) -> None:
        check_int("last_seq", self.last_seq, optional=True)
        check_int("events_applied", self.events_applied)
        check_int("gaps", self.gaps)
        check_float("sim_time", self.sim_time, optional=True)
        check_float("last_latency_s", self.last_latency_s, nonnegative=True)
        _check_type("battery", self.battery, BatterySnapshot, optional=True)
        _check_type("lifetime", self.lifetime, LifetimeSnapshot, optional=True)
        _check_type("energy_totals", self.energy_totals, EnergyTotals)
        _check_type("inference", self.inference, InferenceCounters)


def _check_type(name: str, value: object, cls: type, *, optional: bool = False) -> None:
    if not (isinstance(value, cls) or (optional and value is None)):
        accepted = f"{cls.__name__} or None" if optional else cls.__name__
        raise ValueError(f"{name} must be {accepted}, got {value!r:.80}")


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One line of the append-only event log: one per batch the node handled.

    outcome: ``learned``; ``depleted`` (too little energy left, nothing learned); ``failed``
    (the node could not handle the batch and skipped it; its error message says why);
    ``paused`` (an operator's desired state turned learning off: committed, not learned);
    ``policy`` (the node's energy-aware policy did not learn it: the state of charge was
    below its threshold, or it was held for the sun beyond the most held; answered
    ``energy_policy``); ``deferred`` (held for the sun by ``defer-to-sun``: its batch waits in
    the ``deferred`` table, answered ``deferred``; this line is replaced, in one transaction
    with the removal of that row, by the event that learns it or by ``policy`` when dropped).
    """

    seq: int
    t: float
    samples: int
    accuracy: float | None
    energy: Mapping[str, Any]
    host_s: float
    outcome: str = "learned"

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {self.outcome!r}")
        check_int("seq", self.seq)
        check_float("t", self.t)
        check_int("samples", self.samples)
        check_float("accuracy", self.accuracy, optional=True)
        if self.accuracy is not None and not 0.0 <= self.accuracy <= 1.0:
            raise ValueError(f"accuracy must be in [0, 1], got {self.accuracy}")
        freeze_json(self, "energy", self.energy)
        check_float("host_s", self.host_s)
        if self.host_s < 0:
            raise ValueError(f"host_s must be >= 0, got {self.host_s}")


@dataclass(frozen=True, slots=True)
class StoreMeta:
    """Who the state file belongs to, written once when the file is created."""

    device_id: str
    model_id: str
    config: Mapping[str, Any]
    created: str  # ISO 8601, UTC

    def __post_init__(self) -> None:
        for name in ("device_id", "model_id", "created"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string, got {getattr(self, name)!r}")
        freeze_json(self, "config", self.config)


@dataclass(frozen=True, slots=True)
class DesiredRecord:
    """The operator's desired state in force: its ``version``, the ``settings`` it set (only
    those), and the last ``seq`` learned (with its simulated time ``t``) when it took effect."""

    version: int
    settings: Mapping[str, Any]
    seq: int | None = None
    t: float | None = None

    def __post_init__(self) -> None:
        check_int("version", self.version)
        if self.version < 1:
            raise ValueError(f"a desired version in force is >= 1, got {self.version}")
        check_int("seq", self.seq, optional=True)
        check_float("t", self.t, optional=True)
        freeze_json(self, "settings", self.settings)
