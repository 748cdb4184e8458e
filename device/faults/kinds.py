"""What a fault is: its kind, the devices it targets, when it happens and what it does.

A fleet spec lists faults as ``[[fault]]`` tables (docs/faults.md); each becomes one
:class:`FaultSpec`, checked when built. The kinds:

- ``crash``: the device's process dies and restarts; its state is what its database holds;
- ``battery_death``: the charge drops to 0;
- ``capacity_loss``: ``capacity_fraction`` of the battery's capacity (and of its charge) is
  lost at once;
- ``brownout``: power is lost in the middle of the next learning event: the event is not
  committed, the device restarts with the state it had before it;
- ``storage_full``: every write of the node's SQLite file fails with SQLITE_FULL for
  ``duration_s`` seconds of the node's clock; the node reports it and keeps serving;
- ``clock_jump``: the node's clock jumps by ``jump_s`` seconds (either sign);
- ``network``: the node's inbox delays, loses, duplicates and reorders messages
  (:class:`NetworkImpairment`) for ``duration_s`` simulated seconds, or for the rest of the run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Final

__all__ = [
    "KINDS",
    "NODE_CLOCK_KINDS",
    "FaultSpec",
    "NetworkImpairment",
    "fault_from_dict",
    "fault_to_dict",
]

#: Every kind of fault, in the order docs/faults.md describes them.
KINDS: Final = (
    "crash",
    "battery_death",
    "capacity_loss",
    "brownout",
    "storage_full",
    "clock_jump",
    "network",
)
#: Kinds whose ``duration_s`` runs on the node's own clock (a node that cannot commit learns
#: nothing, so its simulated time stands still); ``network`` counts simulated seconds.
NODE_CLOCK_KINDS: Final = frozenset({"storage_full"})


def _probability(name: str, value: float) -> None:
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")


def _seconds(name: str, value: float | None, *, positive: bool = False) -> None:
    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number of seconds {bound}, got {value!r}")


@dataclass(frozen=True, slots=True)
class NetworkImpairment:
    """What a node's inbox does to each message while a ``network`` fault holds.

    ``latency_s`` plus a uniform draw in ``[0, jitter_s]`` delays each message (node's clock);
    ``loss`` is the probability a message is lost (acknowledged, never handled), ``duplicate``
    that it is handled twice, ``reorder`` that it is held back and handled after the next one.
    """

    latency_s: float = 0.0
    jitter_s: float = 0.0
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0

    def __post_init__(self) -> None:
        _seconds("latency_s", self.latency_s)
        _seconds("jitter_s", self.jitter_s)
        for name in ("loss", "duplicate", "reorder"):
            _probability(name, getattr(self, name))


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One ``[[fault]]`` table.

    Targets: the devices of ``classes`` (every class when empty), narrowed to ``fraction`` of
    them (a seeded choice of ``round(fraction x count)`` devices), or exactly the ``ids`` given.
    When: once at ``at_s`` simulated seconds after the device's first batch, or as a Poisson
    process of ``rate_per_hour`` events per simulated hour (from ``at_s`` on, 0 when absent).
    """

    kind: str
    classes: tuple[str, ...] = ()
    fraction: float | None = None
    ids: tuple[str, ...] = ()
    at_s: float | None = None
    rate_per_hour: float | None = None
    duration_s: float | None = None
    capacity_fraction: float | None = None
    jump_s: float | None = None
    network: NetworkImpairment | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"fault kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.fraction is not None:
            _probability("fraction", self.fraction)
        if self.ids and (self.classes or self.fraction is not None):
            raise ValueError("give either ids or classes/fraction as a fault's targets, not both")
        if self.at_s is None and self.rate_per_hour is None:
            raise ValueError("a fault needs at_s (simulated seconds) or rate_per_hour")
        _seconds("at_s", self.at_s)
        if self.rate_per_hour is not None and not (
            math.isfinite(self.rate_per_hour) and self.rate_per_hour > 0
        ):
            raise ValueError(f"rate_per_hour must be > 0, got {self.rate_per_hour!r}")
        _seconds("duration_s", self.duration_s, positive=True)
        if self.kind == "storage_full" and self.duration_s is None:
            raise ValueError("a storage_full fault needs duration_s (seconds of the node's clock)")
        if self.kind == "capacity_loss":
            lost = self.capacity_fraction
            if lost is None or not (math.isfinite(lost) and 0.0 < lost < 1.0):
                raise ValueError(f"capacity_loss needs capacity_fraction in (0, 1), got {lost!r}")
        if self.kind == "clock_jump" and (
            self.jump_s is None or not math.isfinite(self.jump_s) or self.jump_s == 0
        ):
            raise ValueError(f"clock_jump needs jump_s, a non-zero number, got {self.jump_s!r}")
        if self.kind == "network" and self.network is None:
            raise ValueError("a network fault needs at least one of latency_s, jitter_s, loss, ...")

    @property
    def start_s(self) -> float:
        """Simulated seconds after the device's first batch the fault may first happen."""
        return 0.0 if self.at_s is None else self.at_s


def fault_to_dict(spec: FaultSpec) -> dict[str, Any]:
    """``spec`` as JSON-able values (a fleet worker's plan carries its devices' faults)."""
    out = {f.name: getattr(spec, f.name) for f in fields(spec)}
    out["classes"], out["ids"] = list(spec.classes), list(spec.ids)
    out["network"] = None if spec.network is None else asdict(spec.network)
    return out


def fault_from_dict(data: Mapping[str, Any]) -> FaultSpec:
    """The :class:`FaultSpec` :func:`fault_to_dict` wrote."""
    network = data.get("network")
    values = dict(data) | {
        "classes": tuple(data.get("classes", ())),
        "ids": tuple(data.get("ids", ())),
        "network": None if network is None else NetworkImpairment(**network),
    }
    return FaultSpec(**values)
