"""Watching a fleet from the outside, through the broker, as an operator's tools would.

Nothing here reaches into a node: everything is read from the messages the nodes publish
(telemetry, status, error, prediction; :mod:`dataset_stream.protocol` types).

- :class:`FleetMonitor`: subscribes to every node's reports, keeps per-device records
  (:class:`DeviceRecord`) and the fleet's event lag (:class:`LagStats`) in bounded memory;
- :class:`MetricsServer` and :class:`FleetCollector`: the monitor's records as Prometheus metrics;
- :class:`RunRecorder`, :func:`load_run`, :func:`iter_messages`: a run recorded in one SQLite file
  and read back (:mod:`device.observe.recorder`);
- :func:`render_report`: a static HTML report of a recording;
- :func:`device_summary`: a node's part of the end-of-run summary.
"""

from device.observe.accounting import DeviceRecord, LagStats, SeqWindow
from device.observe.errors import (
    ExporterError,
    MonitorError,
    NotARecording,
    ObserveError,
    RecordError,
    UnsupportedRecording,
)
from device.observe.exporter import FleetCollector, FleetSnapshot, MetricsServer
from device.observe.monitor import FleetMonitor, OnMessage
from device.observe.recorder import RunData, RunRecorder, iter_messages, load_run
from device.observe.report import render_report
from device.observe.runsummary import device_summary

__all__ = [
    "DeviceRecord",
    "ExporterError",
    "FleetCollector",
    "FleetMonitor",
    "FleetSnapshot",
    "LagStats",
    "MetricsServer",
    "MonitorError",
    "NotARecording",
    "ObserveError",
    "OnMessage",
    "RecordError",
    "RunData",
    "RunRecorder",
    "SeqWindow",
    "UnsupportedRecording",
    "device_summary",
    "iter_messages",
    "load_run",
    "render_report",
]
