"""Prometheus metrics of a watched fleet, read from the monitor's records at scrape time.

:class:`FleetCollector` is a ``prometheus_client`` custom collector: nothing is updated per
message; each scrape reads :class:`~device.observe.monitor.FleetMonitor`'s records and yields metric
families (the list, with units and labels, is in ``docs/monitoring.md``). The records belong to
the monitor's event loop, so a scrape from the HTTP server's thread copies what it needs *on that
loop* and waits for it at most :data:`SCRAPE_TIMEOUT_S`; only that copy is made on the loop
(about 25 ms for 2,000 devices on a busy 2-core machine); the families (24,000 series,
1.4 MB of text, most of a second) are built in the scraping thread.

:class:`MetricsServer` serves them over HTTP (``prometheus_client.start_http_server``, a thread
of its own) on a registry of its own, not the process-wide one. Label cardinality is bounded:
``device`` by the fleet, ``phase`` (plus ``radio`` for a node that charges one), ``state`` and
``code`` by fixed lists, ``class`` by
:data:`~dataset_stream.protocol.PER_CLASS_CAP` (per-class figures are the fleet's, never a
device's: no device x class series).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self

from prometheus_client import start_http_server
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from dataset_stream.protocol import (
    FAULT_KINDS,
    NODE_ERROR_CODES,
    PER_CLASS_CAP,
    ROLLOUT_STATES,
    STATUS_STATES,
    RolloutState,
)
from device.observe.accounting import OTHER_CODE, DeviceRecord
from device.observe.errors import ExporterError

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from device.observe.monitor import FleetMonitor

SCRAPE_TIMEOUT_S: Final = 5.0
#: Energy phases exported (``total`` is their sum: ``sum by (device)`` gives it).
PHASES: Final = ("frozen", "adaptive", "memory", "idle")
#: ``vega_nodes`` states: a status state, or ``unknown`` (no status or telemetry yet).
NODE_STATES: Final = (*STATUS_STATES, "unknown")
#: Error codes of ``vega_node_errors_total``: the node's own, but those with a metric of their own.
NODE_FAULT_CODES: Final = (*sorted(NODE_ERROR_CODES - {"duplicate", "gap"}), OTHER_CODE)
HOUR_S: Final = 3600.0
#: Upper bounds of ``vega_fleet_lifetime_seconds``: 1 h, 6 h, 1 d, 3 d, 1 w, 2 w, 30 d, 90 d,
#: 180 d, 1 y, 2 y, 5 y (seconds).
LIFETIME_BUCKETS_S: Final = tuple(
    h * HOUR_S for h in (1, 6, 24, 72, 168, 336, 720, 2160, 4320, 8760, 17520, 43800)
)


@dataclass(frozen=True, slots=True)
class FleetSnapshot:
    """What a scrape reads of a :class:`FleetMonitor`, copied on its loop."""

    devices: tuple[DeviceRecord, ...]  # copies: their dicts are the snapshot's own
    lag_buckets: tuple[tuple[str, int], ...]
    lag_sum_s: float
    accepted: dict[str, int]
    ignored: dict[str, int]
    reconnects: int
    connected: bool
    faults: dict[str, int] = dataclasses.field(default_factory=dict)
    rollouts: tuple[RolloutState, ...] = ()  # the latest step of each rollout seen

    @classmethod
    def of(cls, monitor: FleetMonitor) -> Self:
        devices = tuple(
            dataclasses.replace(
                rec,
                errors_by_code=dict(rec.errors_by_code),
                energy_by_phase_j=dict(rec.energy_by_phase_j),
                faults=dict(rec.faults),
                network_windows=list(rec.network_windows),
            )
            for rec in monitor.devices.values()
        )
        return cls(
            devices=devices,
            lag_buckets=tuple(monitor.lag.cumulative()),
            lag_sum_s=monitor.lag.total_s,
            accepted=dict(monitor.accepted),
            ignored={
                "invalid": monitor.invalid,
                "foreign": monitor.foreign,
                "repeated": monitor.repeated,
            },
            reconnects=monitor.reconnects,
            connected=monitor.connected.is_set(),
            faults=dict(monitor.faults),
            rollouts=tuple(monitor.rollouts.values()),
        )


class FleetCollector(Collector):
    """Yields the fleet's metrics from ``monitor``'s records, copied on ``loop`` (default: the
    running loop at construction)."""

    def __init__(
        self, monitor: FleetMonitor, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        self.monitor = monitor
        self.loop = loop or asyncio.get_running_loop()

    def describe(self) -> Iterable[Metric]:
        return []  # names are not known before the first message; collect() is not run early

    def collect(self) -> Iterable[Metric]:
        return list(families(self.snapshot()))

    def snapshot(self) -> FleetSnapshot:
        """The monitor's figures now, copied on its loop (directly when called on that loop, or
        when it no longer runs)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop or not self.loop.is_running():
            return FleetSnapshot.of(self.monitor)

        async def on_loop() -> FleetSnapshot:
            return FleetSnapshot.of(self.monitor)

        future = asyncio.run_coroutine_threadsafe(on_loop(), self.loop)
        return future.result(timeout=SCRAPE_TIMEOUT_S)


def families(snap: FleetSnapshot) -> Iterator[Metric]:
    """Every metric family of ``snap``."""
    yield from _device_families(snap.devices)
    yield from _fleet_families(snap)
    yield from _downlink_families(snap)
    yield from _monitor_families(snap)


def _device_families(records: tuple[DeviceRecord, ...]) -> Iterator[Metric]:
    dev = ["device"]
    remaining = GaugeMetricFamily(
        "vega_battery_remaining_joules", "Energy left in the battery.", labels=dev
    )
    soc = GaugeMetricFamily("vega_battery_soc_ratio", "State of charge, 0..1.", labels=dev)
    energy = CounterMetricFamily(
        "vega_energy_joules",
        "Energy spent, summed over the telemetry the monitor received, by phase.",
        labels=["device", "phase"],
    )
    events = CounterMetricFamily(
        "vega_events", "Learning events the node reports having learned.", labels=dev
    )
    lifetime = GaugeMetricFamily(
        "vega_lifetime_seconds",
        "Projected remaining battery lifetime at the observed event rate.",
        labels=dev,
    )
    accuracy = GaugeMetricFamily(
        "vega_accuracy_ratio", "Accuracy on the device's held-out set, 0..1.", labels=dev
    )
    measured_at = GaugeMetricFamily(
        "vega_accuracy_measured_events",
        "The device's learned-event count when vega_accuracy_ratio was measured: its events "
        "count, or less for a node measuring every k events (--eval-every) between two.",
        labels=dev,
    )
    info = GaugeMetricFamily(
        "vega_device_info",
        "Always 1: the device's state, model and LR bits as labels.",
        labels=["device", "state", "model", "lr_bits"],
    )
    received = GaugeMetricFamily(
        "vega_telemetry_received_timestamp_seconds",
        "Wall time (unix) the monitor last received a new telemetry seq of the device.",
        labels=dev,
    )
    gaps = CounterMetricFamily("vega_gaps", "Seqs the node skipped (never arrived).", labels=dev)
    duplicates = CounterMetricFamily(
        "vega_duplicates",
        "Batches the node received again (acknowledged, not re-applied).",
        labels=dev,
    )
    rejected = CounterMetricFamily(
        "vega_rejected_inputs",
        "Inputs the node refused, by protocol error code.",
        labels=["device", "code"],
    )
    predictions = CounterMetricFamily(
        "vega_predictions",
        "Prediction messages the node published (answers to inference requests).",
        labels=dev,
    )
    prequential = GaugeMetricFamily(
        "vega_prequential_accuracy_ratio",
        "Prequential (test-then-train) accuracy: predictions later labelled, 0..1.",
        labels=dev,
    )
    forgetting = GaugeMetricFamily(
        "vega_forgetting_ratio",
        "Mean forgetting over the classes the device has seen: best earlier accuracy minus "
        "accuracy now, on its held-out set (Chaudhry et al. 2018); negative: improved.",
        labels=dev,
    )
    faults = CounterMetricFamily(
        "vega_node_errors",
        "Node errors other than duplicates and gaps, by code (unknown codes: other).",
        labels=["device", "code"],
    )
    for rec in records:
        name = rec.device
        tel = rec.telemetry
        model = rec.status.model if rec.status is not None else None
        bits = str(tel.replay.bits) if tel is not None else ""
        info.add_metric([name, rec.state, model or "", bits], 1.0)
        gaps.add_metric([name], float(rec.gaps))
        if rec.predictions:
            predictions.add_metric([name], float(rec.predictions))
        duplicates.add_metric([name], float(rec.duplicates))
        for code, count in sorted(rec.rejected.items()):
            rejected.add_metric([name, code], float(count))
        for code in NODE_FAULT_CODES:
            if code in rec.errors_by_code:
                faults.add_metric([name, code], float(rec.errors_by_code[code]))
        if tel is None:
            continue
        remaining.add_metric([name], tel.battery.remaining_j)
        soc.add_metric([name], tel.battery.soc)
        radio = ("radio",) if "radio" in rec.energy_by_phase_j else ()
        for phase in (*PHASES, *radio):  # a node with a radio reports its phase too
            energy.add_metric([name, phase], rec.energy_by_phase_j.get(phase, 0.0))
        events.add_metric([name], float(max(tel.events, rec.events)))
        if tel.lifetime_h is not None and math.isfinite(tel.lifetime_h):
            lifetime.add_metric([name], tel.lifetime_h * HOUR_S)
        if tel.accuracy is not None:
            accuracy.add_metric([name], tel.accuracy)
            at = tel.events if tel.accuracy_events is None else tel.accuracy_events
            measured_at.add_metric([name], float(at))
        if tel.prequential_accuracy is not None:
            prequential.add_metric([name], tel.prequential_accuracy)
        if rec.forgetting is not None:
            forgetting.add_metric([name], rec.forgetting)
        if rec.received is not None:
            received.add_metric([name], rec.received)
    yield from (remaining, soc, energy, events, lifetime, accuracy, measured_at, info, received)
    yield from (gaps, duplicates, rejected, faults, predictions, prequential, forgetting)


def _fleet_families(snap: FleetSnapshot) -> Iterator[Metric]:
    yield HistogramMetricFamily(
        "vega_event_lag_seconds",
        "Arrival wall time of each new telemetry minus its batch's scheduled simulated time "
        "t (delivery + learning time at stream speed 1 only).",
        buckets=list(snap.lag_buckets),
        sum_value=snap.lag_sum_s,
    )
    lifetimes = sorted(
        rec.telemetry.lifetime_h * HOUR_S
        for rec in snap.devices
        if rec.telemetry is not None and rec.telemetry.lifetime_h is not None
    )
    buckets, below = [], 0
    for bound in LIFETIME_BUCKETS_S:
        while below < len(lifetimes) and lifetimes[below] <= bound:
            below += 1
        buckets.append((repr(bound), float(below)))
    buckets.append(("+Inf", float(len(lifetimes))))
    yield GaugeHistogramMetricFamily(
        "vega_fleet_lifetime_seconds",
        "Projected remaining lifetimes of the devices now (recomputed at each scrape).",
        buckets=buckets,
        gsum_value=math.fsum(t for t in lifetimes if math.isfinite(t)),
    )
    yield from _class_families(snap.devices)
    nodes = GaugeMetricFamily("vega_nodes", "Devices by state.", labels=["state"])
    by_state = dict.fromkeys(NODE_STATES, 0)
    for rec in snap.devices:
        by_state[rec.state] = by_state.get(rec.state, 0) + 1
    for state, count in by_state.items():
        nodes.add_metric([state], float(count))
    yield nodes


def _downlink_families(snap: FleetSnapshot) -> Iterator[Metric]:
    """Desired vs reported state and rollouts: ``vega_config_version``, not converged, each
    rollout's stage (percent of the fleet) and state."""
    version = GaugeMetricFamily(
        "vega_config_version",
        "Desired-state version the device reports running (0: none ever applied).",
        labels=["device"],
    )
    for rec in snap.devices:
        if rec.reported_version is not None:
            version.add_metric([rec.device], float(rec.reported_version))
    yield version
    yield GaugeMetricFamily(
        "vega_devices_not_converged",
        "Devices whose reported version has not reached their desired one (refusals included).",
        value=float(sum(not rec.converged for rec in snap.devices)),
    )
    stage = GaugeMetricFamily(
        "vega_rollout_stage",
        "Percent of the fleet a rollout's current stage covers.",
        labels=["rollout"],
    )
    state = GaugeMetricFamily(
        "vega_rollout_state",
        "1 for a rollout's current state (staging, soaking, halted, rolled_back, done).",
        labels=["rollout", "state"],
    )
    for rollout in snap.rollouts:
        if rollout.stages:
            stage.add_metric([rollout.name], float(rollout.stages[rollout.stage]))
        for name in ROLLOUT_STATES:
            state.add_metric([rollout.name, name], 1.0 if rollout.state == name else 0.0)
    yield from (stage, state)


def _class_families(records: tuple[DeviceRecord, ...]) -> Iterator[Metric]:
    """Per class, the fleet's mean over the devices whose newest telemetry measured it: accuracy,
    forgetting, and the devices that count. Classes below :data:`PER_CLASS_CAP` only (a node
    sends per-class figures for a model of at most that many classes)."""
    sums: dict[str, dict[int, list[float]]] = {"accuracy": {}, "forgetting": {}}
    for rec in records:
        tel = rec.telemetry
        if tel is None:
            continue
        forgotten = tel.classes.forgetting_by_class if tel.classes is not None else None
        for name, by_class in (("accuracy", tel.accuracy_by_class), ("forgetting", forgotten)):
            if by_class is None or len(by_class) > PER_CLASS_CAP:
                continue
            for label, value in by_class.items():
                if 0 <= label < PER_CLASS_CAP:
                    sums[name].setdefault(label, []).append(value)
    accuracy = GaugeMetricFamily(
        "vega_fleet_class_accuracy_ratio",
        "Mean over the devices of a class's accuracy on their held-out sets, 0..1.",
        labels=["class"],
    )
    forgetting = GaugeMetricFamily(
        "vega_fleet_class_forgetting_ratio",
        "Mean over the devices that have seen a class of its forgetting (best earlier "
        "accuracy minus accuracy now).",
        labels=["class"],
    )
    devices = GaugeMetricFamily(
        "vega_fleet_class_devices",
        "Devices whose newest telemetry measured the class's accuracy.",
        labels=["class"],
    )
    for label, values in sorted(sums["accuracy"].items()):
        accuracy.add_metric([str(label)], math.fsum(values) / len(values))
        devices.add_metric([str(label)], float(len(values)))
    for label, values in sorted(sums["forgetting"].items()):
        forgetting.add_metric([str(label)], math.fsum(values) / len(values))
    yield from (accuracy, forgetting, devices)


def _monitor_families(snap: FleetSnapshot) -> Iterator[Metric]:
    messages = CounterMetricFamily(
        "vega_monitor_messages",
        "Node reports the monitor accepted, by kind (a repeated telemetry seq excluded).",
        labels=["kind"],
    )
    for kind, count in snap.accepted.items():
        messages.add_metric([kind], float(count))
    ignored = CounterMetricFamily(
        "vega_monitor_ignored_messages",
        "Messages the monitor did not account: invalid (bad payload), foreign (another "
        "topic or device), repeated (a telemetry seq counted before).",
        labels=["reason"],
    )
    for reason, count in snap.ignored.items():
        ignored.add_metric([reason], float(count))
    yield messages
    yield ignored
    faults = CounterMetricFamily(
        "vega_faults_injected",
        "Injected faults the nodes reported (docs/faults.md), by kind.",
        labels=["kind"],
    )
    for kind in FAULT_KINDS:
        faults.add_metric([kind], float(snap.faults.get(kind, 0)))
    yield faults
    injected = CounterMetricFamily(
        "vega_injected_delivery_trouble",
        "Gaps (seqs) and duplicates seen while an injected network fault held, by kind.",
        labels=["kind"],
    )
    injected.add_metric(["gap"], float(sum(r.injected_gaps for r in snap.devices)))
    injected.add_metric(["duplicate"], float(sum(r.injected_duplicates for r in snap.devices)))
    yield injected
    yield CounterMetricFamily(
        "vega_monitor_reconnects", "Reconnections to the broker.", value=snap.reconnects
    )
    yield GaugeMetricFamily(
        "vega_monitor_connected",
        "1 while the monitor is connected to the broker.",
        value=1.0 if snap.connected else 0.0,
    )


class MetricsServer:
    """``async with MetricsServer(monitor, port, addr) as server``: ``/metrics`` on
    ``server.port`` (the bound one: port 0 picks a free port) until the context is left."""

    def __init__(self, monitor: FleetMonitor, port: int, addr: str = "127.0.0.1") -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"metrics port {port} is not within 0..65535")
        self.monitor = monitor
        self.addr = addr
        self.port = port
        self.registry = CollectorRegistry(auto_describe=False)
        self._httpd: WSGIServer | None = None

    async def __aenter__(self) -> Self:
        self.registry.register(FleetCollector(self.monitor, asyncio.get_running_loop()))
        try:
            self._httpd, _ = start_http_server(self.port, self.addr, registry=self.registry)
        except OSError as exc:  # in use, not an address of this machine, no such host
            raise ExporterError(
                f"cannot serve metrics on {self.addr}:{self.port}: {exc.strerror or exc}"
            ) from exc
        self.port = self._httpd.server_port
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            await asyncio.to_thread(httpd.shutdown)  # returns once serve_forever has ended
            httpd.server_close()

    @property
    def url(self) -> str:
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}/metrics"


__all__ = ["FleetCollector", "FleetSnapshot", "MetricsServer", "families"]
