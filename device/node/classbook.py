"""What a node remembers of each class over its life, and the long-horizon metrics drawn from it.

:class:`ClassBook` is a pure value (no I/O): one :class:`ClassRow` per class the node was trained
on or measured, updated by each evaluation on the eval set and each learned event. From it,
:meth:`ClassBook.metrics` words the telemetry's
:class:`~dataset_stream.protocol.ClassMetrics`:

- a class is *seen* once it was in a learned batch, or from the start for a factory class (the
  classes the bundle's factory model was trained on: they count as trained at event 0);
- its *forgetting* (Chaudhry et al., 2018) is its best accuracy at an evaluation before the
  latest one minus its accuracy at the latest, for a class seen before the event of that
  evaluation (a class met for the first time has nothing to forget yet);
- its *backward transfer* (Lopez-Paz and Ranzato, 2017) is its accuracy now minus its accuracy
  at the evaluation right after the last event that trained on it (for a factory class, the
  factory model's, measured before the first event), for a class not trained by the latest
  event;
- a class *recurs* when a learned batch holds it again after at least one learned event without
  it; *events since* it counts learned events since it was last in a learned batch.

Event numbers are the node's learned-event count (``events_applied``) after the event: the
factory is event 0, the first learned event is 1.

A node that measures only every k learned events updates the accuracies only at a measurement:
"the evaluation right after" a class's training is then the first measurement after it, and the
metrics between measurements are those of the latest one (``measured_at``), with the recency of
each class counted to the event in hand.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Self, TypeVar

from dataset_stream.protocol import PER_CLASS_CAP, ClassMetrics

__all__ = ["ClassBook", "ClassRow"]

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class ClassRow:
    """One class's record.

    accuracy: at the latest evaluation that measured it; best_earlier: the best at the
    evaluations before that one (None: none); trained_accuracy: at the evaluation right after
    the last event that trained on it; first_seen_event / last_trained_event: the event it was
    first / last trained at (None: never; 0: the factory); last_trained_t: the simulated time of
    that event (None: never on the device); trained_events: learned events that held it;
    recurrences: times it came back after at least one learned event without it.
    """

    label: int
    accuracy: float | None = None
    best_earlier: float | None = None
    trained_accuracy: float | None = None
    first_seen_event: int | None = None
    last_trained_event: int | None = None
    last_trained_t: float | None = None
    trained_events: int = 0
    recurrences: int = 0

    def __post_init__(self) -> None:
        if self.label < 0:
            raise ValueError(f"class label must be >= 0, not {self.label}")
        for name in ("accuracy", "best_earlier", "trained_accuracy"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"class {self.label}: {name} must be within 0..1, not {value}")
        if self.trained_events < 0 or self.recurrences < 0:
            raise ValueError(f"class {self.label}: counts must be >= 0")

    @property
    def seen(self) -> bool:
        return self.first_seen_event is not None

    def measured(self, accuracy: float) -> ClassRow:
        """After an evaluation that found ``accuracy``: the latest moves to the earlier ones."""
        best = self.best_earlier
        if self.accuracy is not None:
            best = self.accuracy if best is None else max(best, self.accuracy)
        return replace(self, accuracy=accuracy, best_earlier=best)

    def trained(self, event: int, t: float) -> ClassRow:
        """In the batch of learned event ``event`` at simulated time ``t``."""
        last = self.last_trained_event
        came_back = last is not None and last < event - 1
        return replace(
            self,
            first_seen_event=event if self.first_seen_event is None else self.first_seen_event,
            last_trained_event=event,
            last_trained_t=t,
            trained_events=self.trained_events + 1,
            recurrences=self.recurrences + int(came_back),
        )

    def forgetting(self, event: int) -> float | None:
        """Best earlier accuracy minus the latest, at event ``event``; None if not defined."""
        if self.first_seen_event is None or self.first_seen_event >= event:
            return None
        if self.best_earlier is None or self.accuracy is None:
            return None
        return self.best_earlier - self.accuracy

    def backward_transfer(self, event: int) -> float | None:
        """Latest accuracy minus the one right after its last training; None if not defined."""
        if self.last_trained_event is None or self.last_trained_event >= event:
            return None
        if self.trained_accuracy is None or self.accuracy is None:
            return None
        return self.accuracy - self.trained_accuracy


@dataclass(frozen=True, slots=True)
class ClassBook:
    """Every class's :class:`ClassRow`, by label (a new book holds the factory classes)."""

    rows: Mapping[int, ClassRow] = field(default_factory=dict)

    @classmethod
    def new(cls, factory_classes: Iterable[int]) -> Self:
        """The book of a node that learned nothing: its factory classes seen at event 0."""
        rows = {
            int(c): ClassRow(int(c), first_seen_event=0, last_trained_event=0)
            for c in factory_classes
        }
        return cls(rows)

    def _row(self, label: int) -> ClassRow:
        return self.rows.get(label) or ClassRow(label)

    def after_factory_evaluation(self, per_class: Mapping[int, float]) -> ClassBook:
        """The factory model measured (no event learned yet): each factory class's accuracy is
        also its accuracy right after its training."""
        rows = dict(self.rows)
        for label, accuracy in per_class.items():
            row = self._row(label).measured(accuracy)
            if row.last_trained_event == 0:
                row = replace(row, trained_accuracy=accuracy)
            rows[label] = row
        return ClassBook(rows)

    def after_event(
        self,
        event: int,
        t: float,
        learned: Collection[int],
        per_class: Mapping[int, float] | None,
        *,
        trained_since: int | None = None,
    ) -> ClassBook:
        """After learned event ``event`` (the node's count after it) at simulated time ``t``
        whose batch held the classes ``learned`` (empty: not learned), and the evaluation that
        followed it (None: no eval set, or not measured at this event). ``trained_since``: the
        event of the previous measurement; a class trained after it takes this measurement as
        its accuracy right after training (None: only the classes of ``learned``)."""
        rows = dict(self.rows)
        for label in learned:
            rows[label] = self._row(label).trained(event, t)
        for label, accuracy in (per_class or {}).items():
            row = rows.get(label) or ClassRow(label)
            row = row.measured(accuracy)
            last = row.last_trained_event
            since = trained_since is not None and last is not None and last > trained_since
            if label in learned or since:
                row = replace(row, trained_accuracy=accuracy)
            rows[label] = row
        return ClassBook(rows)

    def changed(self, before: ClassBook) -> list[ClassRow]:
        """The rows that differ from ``before``'s (what a commit must write)."""
        return [row for label, row in self.rows.items() if before.rows.get(label) != row]

    def metrics(
        self, event: int, t: float | None, num_classes: int, *, measured_at: int | None = None
    ) -> ClassMetrics:
        """The telemetry's metrics at event ``event`` and simulated time ``t``, the accuracies
        being those measured at event ``measured_at`` (None: at ``event``); per-class maps
        only for a model of at most :data:`PER_CLASS_CAP` classes."""
        seen = [row for row in self.rows.values() if row.seen]
        at = event if measured_at is None else measured_at
        forgetting = _defined((row.label, row.forgetting(at)) for row in seen)
        transfer = _defined((row.label, row.backward_transfer(at)) for row in seen)
        per_class = num_classes <= PER_CLASS_CAP
        since = {
            row.label: event - row.last_trained_event
            for row in seen
            if row.last_trained_event is not None
        }
        seconds = {
            row.label: max(0.0, t - row.last_trained_t)
            for row in seen
            if row.last_trained_t is not None and t is not None
        }
        return ClassMetrics(
            classes_seen=len(seen),
            forgetting=_mean(forgetting.values()),
            forgetting_max=max(forgetting.values()) if forgetting else None,
            backward_transfer=_mean(transfer.values()),
            forgetting_by_class=_sorted(forgetting) if per_class else None,
            backward_transfer_by_class=_sorted(transfer) if per_class else None,
            events_since_class=_sorted(since) if per_class else None,
            seconds_since_class=_sorted(seconds) if per_class else None,
        )


def _defined(pairs: Iterable[tuple[int, float | None]]) -> dict[int, float]:
    return {label: value for label, value in pairs if value is not None}


def _mean(values: Collection[float]) -> float | None:
    if not values:
        return None
    mean = math.fsum(values) / len(values)
    return min(1.0, max(-1.0, mean))  # a hair past the bound by rounding is still the bound


def _sorted(values: Mapping[int, V]) -> dict[int, V]:
    return {label: values[label] for label in sorted(values)}
