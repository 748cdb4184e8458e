"""Exceptions of the observers (monitor, exporter, recorder); the tree of :mod:`device.errors`
goes on::

    ObserveError                 every error of ``device.observe``
    ├── MonitorError             the monitor's first connection to the broker failed (later
    │                            losses are retried, not raised)
    ├── ExporterError            the Prometheus metrics server could not listen (port in use,
    │                            address not on this machine, ...)
    └── RecordError              a recording cannot be created, written or read
        ├── NotARecording        the file exists but is not a vega-emu recording
        └── UnsupportedRecording a recording in a format this version does not read
"""

from __future__ import annotations

from device.errors import DeviceError


class ObserveError(DeviceError):
    """Base class of every error raised by :mod:`device.observe`."""


class MonitorError(ObserveError):
    """The monitor could not make its first connection to the broker."""


class ExporterError(ObserveError):
    """The metrics server could not listen (port in use, address not on this machine, ...)."""


class RecordError(ObserveError):
    """A recording cannot be created, written or read."""


class NotARecording(RecordError):
    """The file exists but is not a recording of vega-emu."""


class UnsupportedRecording(RecordError):
    """A recording in a format this version of vega-emu does not read."""


__all__ = [
    "ExporterError",
    "MonitorError",
    "NotARecording",
    "ObserveError",
    "RecordError",
    "UnsupportedRecording",
]
