"""Long-horizon learning metrics of a node, as the optional fields of its telemetry.

:class:`ClassMetrics` groups what a node reports about each class over its life, measured on its
eval set (docs/protocol.md, "Long-horizon metrics"):

- ``forgetting``: the mean, over the classes seen before the evaluation, of each class's
  forgetting, its best accuracy at an earlier evaluation minus its accuracy now (Chaudhry et al.,
  2018, "Riemannian Walk for Incremental Learning"); ``forgetting_max`` the largest;
- ``backward_transfer``: the mean, over the classes trained before the current event, of each
  class's accuracy now minus its accuracy right after the last event that trained on it
  (Lopez-Paz and Ranzato, 2017); negative when learning other classes hurt it;
- ``classes_seen``: classes the node was trained on (on the device or in the factory);
- per class, only when the model has at most :data:`PER_CLASS_CAP` classes (so that a message
  stays bounded whatever the model): ``forgetting_by_class``, ``backward_transfer_by_class``,
  ``events_since_class`` (learned events since the class was last in a learned batch; the
  factory counts as event 0) and ``seconds_since_class`` (simulated seconds since then, for
  classes trained on the device).

On the wire the fields are flat, beside ``accuracy_by_class``; maps are keyed by the class id as
a decimal string. A message without ``classes_seen`` has none of them.

A node measuring every k > 1 learned events (telemetry ``accuracy_events``) computes forgetting
and backward transfer at its measurements only: "an earlier evaluation" is an earlier
measurement, "right after" a class's training the first measurement after it, and between two
measurements the figures are those of the latest one (the recency fields count to the event in
hand).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Self

#: Classes up to which a node sends per-class maps; a model with more sends aggregates only.
PER_CLASS_CAP: Final = 64

#: The wire fields of :class:`ClassMetrics`, in the order they are written.
CLASS_METRIC_FIELDS: Final = (
    "classes_seen",
    "forgetting",
    "forgetting_max",
    "backward_transfer",
    "forgetting_by_class",
    "backward_transfer_by_class",
    "events_since_class",
    "seconds_since_class",
)
_MAPS: Final = CLASS_METRIC_FIELDS[4:]
_AGGREGATES: Final = ("forgetting", "forgetting_max", "backward_transfer")


@dataclass(frozen=True, slots=True)
class ClassMetrics:
    """Forgetting, backward transfer and recency of a node's classes (see the module docstring).

    Aggregates are None when no class qualifies yet; maps are None when the model has more than
    :data:`PER_CLASS_CAP` classes (or the sender leaves them out), and hold only the classes
    that qualify otherwise.
    """

    classes_seen: int
    forgetting: float | None = None
    forgetting_max: float | None = None
    backward_transfer: float | None = None
    forgetting_by_class: Mapping[int, float] | None = None
    backward_transfer_by_class: Mapping[int, float] | None = None
    events_since_class: Mapping[int, int] | None = None
    seconds_since_class: Mapping[int, float] | None = None

    def __post_init__(self) -> None:
        if self.classes_seen < 0:
            raise ValueError(f"classes_seen must be >= 0, not {self.classes_seen}")
        for name in _AGGREGATES:
            value = getattr(self, name)
            if value is not None and not -1.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within -1..1, not {value}")
        for name in _MAPS:
            values = getattr(self, name)
            if values is not None and len(values) > PER_CLASS_CAP:
                raise ValueError(
                    f"{name} holds {len(values)} classes, more than the cap of {PER_CLASS_CAP}"
                )

    def to_dict(self) -> dict[str, Any]:
        """The wire fields: aggregates always (null when not known), maps when present."""
        out: dict[str, Any] = {name: getattr(self, name) for name in CLASS_METRIC_FIELDS[:4]}
        for name in _MAPS:
            values = getattr(self, name)
            if values is not None:
                out[name] = {str(k): v for k, v in values.items()}
        return out

    @classmethod
    def from_fields(cls, obj: Mapping[str, Any]) -> Self | None:
        """The metrics among a valid message's fields; None when it has none."""
        if "classes_seen" not in obj:
            return None

        def floats(name: str) -> dict[int, float] | None:
            values = obj.get(name)
            return None if values is None else {int(k): float(v) for k, v in values.items()}

        events = obj.get("events_since_class")
        return cls(
            classes_seen=int(obj["classes_seen"]),
            forgetting=_optional_float(obj.get("forgetting")),
            forgetting_max=_optional_float(obj.get("forgetting_max")),
            backward_transfer=_optional_float(obj.get("backward_transfer")),
            forgetting_by_class=floats("forgetting_by_class"),
            backward_transfer_by_class=floats("backward_transfer_by_class"),
            events_since_class=None
            if events is None
            else {int(k): int(v) for k, v in events.items()},
            seconds_since_class=floats("seconds_since_class"),
        )


def _optional_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


__all__ = ["CLASS_METRIC_FIELDS", "PER_CLASS_CAP", "ClassMetrics"]
