"""The answer to an inference request: :class:`Prediction`, on ``{prefix}/{device}/prediction``.

One JSON object per request (``schemas/prediction.json``)::

    {"device": "node-0001", "seq": 12, "t": 1764000060.0,
     "classes": [3, 7], "confidence": [0.91, 0.48],       # per sample: argmax, softmax max
     "ids": [120, 121],                                    # only when the request named them
     "latency_s": {"frozen": .., "adaptive": .., "total": ..},  # on the emulated hardware
     "energy_j":  {"frozen": .., "adaptive": .., "total": ..},
     "battery": {"soc": 0.93, "remaining_j": 36000.0},
     "repeated": true}                                     # only on a second answer (not charged)

``seq`` is the request's own sequence number (inference requests and batches are numbered
independently). Serialised only at the edge, like the other node messages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Self

from dataset_stream.protocol.messages import JsonMessage, extra_fields
from dataset_stream.protocol.topics import validate_device_id
from dataset_stream.protocol.values import BatteryState

#: Parts of a prediction's ``latency_s`` and ``energy_j``.
INFERENCE_PARTS: Final = ("frozen", "adaptive", "total")


@dataclass(frozen=True, slots=True)
class Prediction(JsonMessage):
    """The classes a node gave the samples of one inference request, and what that cost.

    ``classes[i]`` and ``confidence[i]`` (the softmax maximum, 0..1) belong to sample ``i``;
    ``ids`` echoes the request's sample ids. ``repeated``: a second answer to a request seen
    before, with the cost of the first; the battery was not charged again.
    """

    SCHEMA: ClassVar[str] = "prediction"
    KNOWN: ClassVar[frozenset[str]] = frozenset(
        [
            "device",
            "seq",
            "t",
            "classes",
            "confidence",
            "ids",
            "latency_s",
            "energy_j",
            "battery",
            "repeated",
        ]
    )

    device: str
    seq: int
    t: float
    classes: Sequence[int]
    confidence: Sequence[float]
    latency_s: Mapping[str, float]
    energy_j: Mapping[str, float]
    ids: Sequence[int] | None = None
    battery: BatteryState | None = None
    repeated: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_device_id(self.device)
        if self.seq < 0:
            raise ValueError(f"prediction seq must be >= 0, not {self.seq}")
        n = len(self.classes)
        if len(self.confidence) != n or (self.ids is not None and len(self.ids) != n):
            raise ValueError(
                f"prediction of {n} classes has {len(self.confidence)} confidences"
                + ("" if self.ids is None else f" and {len(self.ids)} ids")
            )
        if any(c < 0 for c in self.classes) or not all(0.0 <= p <= 1.0 for p in self.confidence):
            raise ValueError("prediction classes must be >= 0 and confidences in 0..1")
        missing = [p for p in INFERENCE_PARTS if p not in self.latency_s or p not in self.energy_j]
        if missing:
            raise ValueError(f"prediction misses latency/energy parts {missing}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            **self.extra,
            "device": self.device,
            "seq": self.seq,
            "t": self.t,
            "classes": list(self.classes),
            "confidence": list(self.confidence),
            "latency_s": dict(self.latency_s),
            "energy_j": dict(self.energy_j),
        }
        if self.ids is not None:
            out["ids"] = list(self.ids)
        if self.battery is not None:
            out["battery"] = self.battery.to_dict()
        if self.repeated:
            out["repeated"] = True
        return out

    @classmethod
    def from_valid(cls, obj: dict[str, Any]) -> Self:
        return cls(
            device=obj["device"],
            seq=obj["seq"],
            t=float(obj["t"]),
            classes=tuple(obj["classes"]),
            confidence=tuple(float(p) for p in obj["confidence"]),
            latency_s={k: float(v) for k, v in obj["latency_s"].items()},
            energy_j={k: float(v) for k, v in obj["energy_j"].items()},
            ids=None if obj.get("ids") is None else tuple(obj["ids"]),
            battery=None if "battery" not in obj else BatteryState.from_dict(obj["battery"]),
            repeated=bool(obj.get("repeated", False)),
            extra=extra_fields(obj, cls.KNOWN),
        )


__all__ = ["INFERENCE_PARTS", "Prediction"]
