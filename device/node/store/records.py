"""Values the node reads from and writes to its store (frozen, checked when built)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["OUTCOMES", "EventRecord", "NodeState", "StoreMeta"]

OUTCOMES = ("learned", "depleted", "failed")


def _frozen_json(owner: object, name: str, value: Mapping[str, Any]) -> None:
    """Check ``value`` is a JSON object and store a read-only copy of it on ``owner``."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be a mapping, got {value!r:.80}")
    try:
        text = json.dumps(dict(value), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be JSON-serialisable with finite numbers: {exc}") from exc
    object.__setattr__(owner, name, MappingProxyType(json.loads(text)))


def _check_int(name: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")


def _check_float(name: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


@dataclass(frozen=True, slots=True)
class NodeState:
    """The node's persistent counters: what it has applied, its battery and energy totals.

    last_seq: the last applied batch ``seq`` (None before the first event);
    events_applied: learning events applied; sim_time: simulated unix time of the last event;
    battery / energy: JSON objects owned by the node (e.g. ``{"remaining_j": ..}``);
    gaps: seqs skipped because they never arrived;
    inference: JSON object owned by the node (inference counters, prequential scores).
    """

    last_seq: int | None = None
    events_applied: int = 0
    sim_time: float | None = None
    battery: Mapping[str, Any] = field(default_factory=dict)
    energy: Mapping[str, Any] = field(default_factory=dict)
    gaps: int = 0
    inference: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_int("last_seq", self.last_seq, optional=True)
        _check_int("events_applied", self.events_applied)
        _check_int("gaps", self.gaps)
        _check_float("sim_time", self.sim_time, optional=True)
        _frozen_json(self, "battery", self.battery)
        _frozen_json(self, "energy", self.energy)
        _frozen_json(self, "inference", self.inference)


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One line of the append-only event log: one per batch the node handled.

    outcome: ``learned``; ``depleted`` (too little energy left, nothing learned); ``failed``
    (the node could not handle the batch and skipped it; its error message says why).
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
        _check_int("seq", self.seq)
        _check_float("t", self.t)
        _check_int("samples", self.samples)
        _check_float("accuracy", self.accuracy, optional=True)
        if self.accuracy is not None and not 0.0 <= self.accuracy <= 1.0:
            raise ValueError(f"accuracy must be in [0, 1], got {self.accuracy}")
        _frozen_json(self, "energy", self.energy)
        _check_float("host_s", self.host_s)
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
        _frozen_json(self, "config", self.config)
