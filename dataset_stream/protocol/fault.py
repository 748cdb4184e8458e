"""A fault injected into a node: :class:`FaultReport`, on ``{prefix}/{device}/fault`` (QoS 1).

A node that carries out an injected fault (docs/faults.md) says so before it acts, so that a
recording tells injected trouble from real trouble (``schemas/fault.json``)::

    {"device": "node-0003", "kind": "network", "index": 2, "n": 0, "at_s": 0.0,
     "fired_s": 0.0, "seq": 17, "duration_s": null, "ts": 1700000000.0,
     "params": {"loss": 0.05, "duplicate": 0.05}}

``index`` is the ``[[fault]]`` table of the spec, ``n`` the occurrence (a ``rate_per_hour``
fault happens again and again), ``at_s`` the simulated time it was due and ``fired_s`` the
simulated time the node carried it out (both seconds after the device's first batch; the node
acts when a batch reaches the due time, ``seq`` being that batch). A new topic kind, so that
consumers that do not subscribe to it see nothing new.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Self

from dataset_stream.errors import ForeignMessage, ProtocolError
from dataset_stream.protocol.messages import JsonMessage, extra_fields
from dataset_stream.protocol.topics import parse_topic, validate_device_id

#: The kinds of fault a node reports (docs/faults.md).
FAULT_KINDS: Final = (
    "crash",
    "battery_death",
    "capacity_loss",
    "brownout",
    "storage_full",
    "clock_jump",
    "network",
)


@dataclass(frozen=True, slots=True)
class FaultReport(JsonMessage):
    """Device ``device`` carried out occurrence ``n`` of fault ``index`` (of kind ``kind``)."""

    SCHEMA: ClassVar[str] = "fault"
    KNOWN: ClassVar[frozenset[str]] = frozenset(
        ["device", "kind", "index", "n", "at_s", "fired_s", "seq", "duration_s", "ts", "params"]
    )

    device: str
    kind: str
    index: int
    n: int
    at_s: float
    fired_s: float
    seq: int | None = None
    duration_s: float | None = None
    ts: float = 0.0
    params: Mapping[str, float] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_device_id(self.device)
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind {self.kind!r} is not one of {', '.join(FAULT_KINDS)}")
        for name in ("at_s", "fired_s", "ts"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "device": self.device,
            "kind": self.kind,
            "index": self.index,
            "n": self.n,
            "at_s": self.at_s,
            "fired_s": self.fired_s,
            "seq": self.seq,
            "duration_s": self.duration_s,
            "ts": self.ts,
            "params": dict(self.params),
        }

    @classmethod
    def from_valid(cls, obj: dict[str, Any]) -> Self:
        return cls(
            device=obj["device"],
            kind=obj["kind"],
            index=obj["index"],
            n=obj["n"],
            at_s=float(obj["at_s"]),
            fired_s=float(obj["fired_s"]),
            seq=obj.get("seq"),
            duration_s=None if obj.get("duration_s") is None else float(obj["duration_s"]),
            ts=float(obj.get("ts", 0.0)),
            params={k: float(v) for k, v in obj.get("params", {}).items()},
            extra=extra_fields(obj, cls.KNOWN),
        )


def read_fault(prefix: str, where: str, payload: object) -> FaultReport:
    """The fault report published on topic ``where``.

    Raises :class:`ForeignMessage` for a topic that is not a node's ``fault`` under ``prefix``
    or a report that names another device than its topic; ``ProtocolError("bad_format")`` for a
    payload that is not a valid report.
    """
    try:
        device, kind = parse_topic(prefix, where)
    except ProtocolError as exc:
        raise ForeignMessage(f"a message on {where[:200]!r}: {exc.message}") from None
    if kind != "fault":
        raise ForeignMessage(f"a message on {where[:200]}, not a node's fault report")
    if not isinstance(payload, bytes | bytearray):
        raise ProtocolError("bad_format", f"{where}: payload is not bytes")
    report = FaultReport.from_json(bytes(payload))
    if report.device != device:
        raise ForeignMessage(f"fault of device {report.device!r} on the topic of {device}")
    return report


__all__ = ["FAULT_KINDS", "FaultReport", "read_fault"]
