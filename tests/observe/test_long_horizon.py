"""The long-horizon metrics as the observers show them: a report whose accuracy starts at the
factory point, per-class accuracy and a forgetting table; bounded Prometheus series; the
monitor's forgetting column at 80 columns.

The messages are a real engine's (no broker needed for what is checked here), recorded by the
real recorder.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
from rich.console import Console

from broker import BrokerURL
from dataset_stream import Scenario
from dataset_stream.protocol import PER_CLASS_CAP, Batch, EvalSet, Status, Telemetry
from device.cli._monitor_view import monitor_table
from device.learning.learner import Evaluation
from device.model.bundle import ModelBundle
from device.model.frozen import FrozenStage
from device.node.engine import NodeEngine
from device.node.settings import NodeSettings
from device.observe import report_text as text
from device.observe.accounting import DeviceRecord
from device.observe.exporter import FleetSnapshot, families
from device.observe.monitor import FleetMonitor
from device.observe.recorder import RunRecorder, load_run
from device.observe.report import render_report
from device.observe.report_classes import accuracy_points
from tests.support.messages import draining_telemetry
from tests.support.times import T0

DEVICES = ("node-0000", "node-0001")
EVENTS = 8


def learned_run(
    bundle: ModelBundle, scenario: Scenario, state_dir: Path
) -> tuple[dict[str, Evaluation], list[tuple[str, Telemetry | Status]]]:
    """Each device's factory evaluation, and its messages in order: the factory status (events
    0), then the telemetry of ``EVENTS`` learning events."""
    ex, ey = scenario.eval_set
    factory: dict[str, Evaluation] = {}
    messages: list[tuple[str, Telemetry | Status]] = []
    for device in DEVICES:
        eng = NodeEngine(NodeSettings(device, state_dir), bundle, FrozenStage.shared(bundle))
        eng.set_eval(EvalSet(ex, ey, "digits"))
        evaluation = eng.measure_factory()
        assert evaluation is not None
        factory[device] = evaluation
        by_class = eng.factory_accuracy_by_class(evaluation)
        messages.append(
            (device, eng.status("idle", accuracy=evaluation.accuracy, accuracy_by_class=by_class))
        )
        for seq, event in enumerate(scenario.events(device, True)[:EVENTS], 1):
            batch = Batch(event.x, event.y, seq=seq, t=T0 + 60 * seq, source="digits")
            messages.append((device, eng.apply(batch).telemetry))
        eng.close()
    return factory, messages


def record(path: Path, messages: list[tuple[str, Telemetry | Status]]) -> Path:
    with RunRecorder(path, meta={"command": "up"}) as recorder:
        for n, (device, message) in enumerate(messages):
            recorder.add(device, message, T0 + n)
    return path


def test_the_report_starts_at_the_factory_point_and_shows_forgetting(
    default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    factory, messages = learned_run(default_bundle, digits_nic, tmp_path / "state")
    run = record(tmp_path / "run.sqlite", messages)
    data = load_run(run)
    points = {p.device: p for p in data.classes.factory}
    assert set(points) == set(DEVICES)
    for device, evaluation in factory.items():
        assert points[device].accuracy == evaluation.accuracy
        assert points[device].by_class == evaluation.per_class
    device, events, accuracy = accuracy_points(data)
    for index, name in enumerate(data.devices):  # each node's curve starts at the factory
        mine = device == index
        assert events[mine][0] == 0 and accuracy[mine][0] == factory[name].accuracy
        assert list(events[mine][1:]) == list(range(1, EVENTS + 1))
    last = {d: t for d, t in messages if isinstance(t, Telemetry)}  # each device's last
    finite = data.classes.forgetting[np.isfinite(data.classes.forgetting)]
    assert finite.size == len(DEVICES) * EVENTS  # every event's mean forgetting

    saved: list[str] = []
    index_html = render_report(
        run, tmp_path / "report", on_figure=lambda name, _: saved.append(name)
    )
    page = index_html.read_text()
    assert {"accuracy.png", "class_accuracy.png", "forgetting.png"} <= set(saved)
    assert "Event 0 is the factory model: 2 of 2 nodes" in page
    table = re.search(r"<table id='forgetting-table'>(.*?)</table>", page)
    assert table is not None
    cell = r"<td>([^<]*)</td>"
    rows = re.findall(r"<tr>" + cell * 4, table[1])
    assert [int(r[0]) for r in rows] == list(range(default_bundle.num_classes))
    for label, final, _best, forgetting in rows:
        finals = [t.accuracy_by_class[int(label)] for t in last.values() if t.accuracy_by_class]
        assert final == text.num(float(np.mean(finals)))
        forgotten = [
            t.classes.forgetting_by_class[int(label)]
            for t in last.values()
            if t.classes is not None
            and t.classes.forgetting_by_class is not None
            and int(label) in t.classes.forgetting_by_class
        ]
        assert forgetting == text.num(float(np.mean(forgotten)) if forgotten else float("nan"))


def test_a_run_without_class_figures_says_so(tmp_path: Path) -> None:
    run = tmp_path / "run.sqlite"
    with RunRecorder(run) as recorder:
        for seq in range(1, 4):
            recorder.add("node-0000", draining_telemetry("node-0000", seq, accuracy=0.5), T0 + seq)
    data = load_run(run)
    assert not data.classes.any and data.classes.factory == ()
    page = render_report(run, tmp_path / "report").read_text()
    assert "No per-class figures in the telemetry" in page
    assert "Event 0 is the factory model" not in page


def _records(messages: list[tuple[str, Telemetry | Status]]) -> dict[str, DeviceRecord]:
    records: dict[str, DeviceRecord] = {}
    for device, message in messages:
        rec = records.setdefault(device, DeviceRecord(device))
        if isinstance(message, Telemetry):
            rec.add_telemetry(message, T0)
        else:
            rec.status = message
    return records


def _samples(records: dict[str, DeviceRecord]) -> dict[str, list[tuple[dict[str, str], float]]]:
    monitor = FleetMonitor(BrokerURL("127.0.0.1", 1884))  # never entered: its records only
    monitor.devices.update(records)
    snap = FleetSnapshot.of(monitor)
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in families(snap):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def test_prometheus_has_fleet_per_class_and_device_forgetting_series_only(
    default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    _, messages = learned_run(default_bundle, digits_nic, tmp_path / "state")
    records = _records(messages)
    samples = _samples(records)
    forgetting = {lab["device"]: v for lab, v in samples["vega_forgetting_ratio"]}
    for device, rec in records.items():
        assert rec.telemetry is not None and rec.telemetry.classes is not None
        assert forgetting[device] == rec.telemetry.classes.forgetting
    accuracy = {lab["class"]: v for lab, v in samples["vega_fleet_class_accuracy_ratio"]}
    assert sorted(accuracy, key=int) == [str(c) for c in range(default_bundle.num_classes)]
    for label, mean in accuracy.items():
        values = [r.telemetry.accuracy_by_class[int(label)] for r in records.values()]  # type: ignore[union-attr,index]
        assert mean == np.mean(values)
    assert {lab["class"] for lab, _ in samples["vega_fleet_class_devices"]} == set(accuracy)
    for name, series in samples.items():  # never a device x class series
        assert not any("device" in lab and "class" in lab for lab, _ in series), name

    # a foreign node sending a huge map: the class series stay within the cap
    wide = records["node-0000"].telemetry
    assert wide is not None
    huge = dataclasses.replace(wide, seq=99, accuracy_by_class={c: 0.5 for c in range(1000)})
    records["node-0000"].add_telemetry(huge, T0)
    classes = {lab["class"] for lab, _ in _samples(records)["vega_fleet_class_accuracy_ratio"]}
    assert len(classes) <= PER_CLASS_CAP


def test_the_monitor_shows_mean_forgetting_at_80_columns(
    default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    _, messages = learned_run(default_bundle, digits_nic, tmp_path / "state")
    monitor = FleetMonitor(BrokerURL("127.0.0.1", 1884))
    monitor.devices.update(_records(messages))
    console = Console(width=80, record=True)
    console.print(monitor_table(monitor, max_rows=10, width=80))
    shown = console.export_text()
    assert all(len(line) <= 80 for line in shown.splitlines())
    assert "forg" in shown and "forg" not in shown.split("not shown at", 1)[-1].split("\n")[0]
    for rec in monitor.devices.values():
        assert rec.forgetting is not None
        assert f"{rec.forgetting:.2f}" in shown
