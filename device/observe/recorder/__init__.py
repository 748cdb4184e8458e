"""Record a run: every telemetry, status and error a fleet published, in one SQLite file.

:class:`RunRecorder` is fed from the asyncio loop, one call per message, so :meth:`~RunRecorder.add`
only turns the message into a row and buffers it; rows are committed every
:data:`FLUSH_EVERY_S` seconds (a timer on the running loop, when there is one), every
:data:`FLUSH_EVERY_ROWS` rows, and on :meth:`~RunRecorder.close`. The file is in WAL mode: a
process killed at any instant loses at most the rows of the last second and never leaves a
damaged file. It is created 0600 (the reports say what the fleet learned).

A recording is one run. The recorder refuses an existing file (an empty one excepted): another
recording, so that two runs are never mixed up in one report, or any other file, so that nothing
is overwritten. :func:`load_run` reads a recording back into numpy columns for the report;
:func:`iter_messages` gives back the messages themselves, in the order they were added; the
per-class figures come with the columns (:class:`ClassColumns`, read from the messages' JSON).

Tables (every row has ``n``, its place in arrival order, and ``received``, wall unix seconds):
``run`` (key, value as JSON: ``command``, ``config``, ``started``, ...), ``telemetry`` (the
figures a report needs as columns, and the message as JSON; one row per device and seq: a
redelivered seq is ignored and counted in :attr:`RunRecorder.repeated`), ``status`` and
``error``, ``fault`` (the injected faults the nodes reported, docs/faults.md) and ``rollout``
(the steps of rollouts, docs/downlink.md); the last two are absent from recordings made before
them, and read as none.
"""

from __future__ import annotations

from device.observe.errors import NotARecording, RecordError, UnsupportedRecording
from device.observe.recorder.classes import ClassColumns, ClassMap, FactoryPoint
from device.observe.recorder.reader import (
    ErrorRow,
    FaultRow,
    RecordedMessage,
    RolloutRow,
    RunData,
    StatusRow,
    TelemetryColumns,
    iter_messages,
    load_run,
)
from device.observe.recorder.schema import APPLICATION_ID, ENERGY_PHASES
from device.observe.recorder.writer import FLUSH_EVERY_ROWS, FLUSH_EVERY_S, RunRecorder

__all__ = [
    "APPLICATION_ID",
    "ENERGY_PHASES",
    "FLUSH_EVERY_ROWS",
    "FLUSH_EVERY_S",
    "ClassColumns",
    "ClassMap",
    "ErrorRow",
    "FactoryPoint",
    "FaultRow",
    "NotARecording",
    "RecordError",
    "RecordedMessage",
    "RolloutRow",
    "RunData",
    "RunRecorder",
    "StatusRow",
    "TelemetryColumns",
    "UnsupportedRecording",
    "iter_messages",
    "load_run",
]
