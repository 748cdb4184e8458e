"""Endless scenarios: a finite scenario's events, then generated ones for ever.

:func:`build_endless` (or :meth:`EndlessScenario.of` a built scenario) gives a scenario whose
events ``1..K`` are the finite scenario's and whose events past ``K`` are generated on demand:
new recordings of the training sessions (:mod:`~dataset_stream.endless.looks`), drifting classes
and classes that leave and come back (:mod:`~dataset_stream.endless.schedule`).
"""

from dataset_stream.endless.looks import ImageLook, SignalLook
from dataset_stream.endless.scenario import (
    ENDLESS_EVENTS,
    EndlessScenario,
    EventStream,
    GeneratedEvent,
    build_endless,
)
from dataset_stream.endless.schedule import Drift, DriftKind, EndlessOptions, Recurrence

__all__ = [
    "ENDLESS_EVENTS",
    "Drift",
    "DriftKind",
    "EndlessOptions",
    "EndlessScenario",
    "EventStream",
    "GeneratedEvent",
    "ImageLook",
    "Recurrence",
    "SignalLook",
    "build_endless",
]
