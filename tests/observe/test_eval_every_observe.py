"""A fleet measuring accuracy every k events as the observers show it: the report plots the
measured points only, the recorder keeps ``accuracy_events``, the monitor shows a carried
accuracy with the event it was measured at.

The messages are a real engine's (no broker needed for what is checked here), recorded by the
real recorder.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from rich.console import Console

from broker import BrokerURL
from dataset_stream import Scenario
from dataset_stream.protocol import Batch, EvalSet, Status, Telemetry
from device.cli._monitor_view import monitor_table
from device.model.bundle import ModelBundle
from device.model.frozen import FrozenStage
from device.node.engine import NodeEngine
from device.node.settings import NodeSettings
from device.observe.accounting import DeviceRecord
from device.observe.exporter import _device_families
from device.observe.monitor import FleetMonitor
from device.observe.recorder import RunRecorder, load_run
from device.observe.report import render_report
from device.observe.report_classes import accuracy_points, forgetting_points
from tests.support.times import T0

DEVICE = "node-0000"
EVERY = 3
EVENTS = 7


def measured_every_k(
    bundle: ModelBundle, scenario: Scenario, state_dir: Path
) -> list[Telemetry | Status]:
    """The factory status (event 0), then the telemetry of ``EVENTS`` events of a node that
    measures every ``EVERY`` learned events."""
    ex, ey = scenario.eval_set
    settings = NodeSettings(DEVICE, state_dir, eval_every=EVERY)
    eng = NodeEngine(settings, bundle, FrozenStage.shared(bundle))
    eng.set_eval(EvalSet(ex, ey, "digits"))
    evaluation = eng.measure_factory()
    assert evaluation is not None
    by_class = eng.factory_accuracy_by_class(evaluation)
    out: list[Telemetry | Status] = [
        eng.status("idle", accuracy=evaluation.accuracy, accuracy_by_class=by_class)
    ]
    for seq, event in enumerate(scenario.events(DEVICE, True)[:EVENTS], 1):
        batch = Batch(event.x, event.y, seq=seq, t=T0 + 60 * seq, source="digits")
        out.append(eng.apply(batch).telemetry)
    eng.close()
    return out


def test_the_report_plots_measured_points_and_the_recorder_keeps_the_field(
    default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    messages = measured_every_k(default_bundle, digits_nic, tmp_path / "state")
    run = tmp_path / "run.sqlite"
    with RunRecorder(run, meta={"command": "up"}) as recorder:
        for n, message in enumerate(messages):
            recorder.add(DEVICE, message, T0 + n)
    with sqlite3.connect(run) as db:
        kept = [
            json.loads(j).get("accuracy_events")
            for (j,) in db.execute("SELECT json FROM telemetry ORDER BY seq")
        ]
    assert kept == [0, 0, 3, 3, 3, 6, 6]
    data = load_run(run)
    assert list(data.telemetry.measured) == [False, False, True, False, False, True, False]
    _, events, accuracy = accuracy_points(data)
    assert list(events) == [0, 3, 6]
    telemetry = [m for m in messages if isinstance(m, Telemetry)]
    assert list(accuracy[1:]) == [telemetry[2].accuracy, telemetry[5].accuracy]
    # the mean forgetting moves only at measurements: carried rows are no points either
    _, at, forgetting = forgetting_points(data)
    assert list(at) == [3, 6]
    assert list(forgetting) == [telemetry[2].classes.forgetting, telemetry[5].classes.forgetting]  # type: ignore[union-attr]
    saved: list[str] = []
    render_report(run, tmp_path / "report", on_figure=lambda name, _: saved.append(name))
    assert {"accuracy.png", "class_accuracy.png", "forgetting.png"} <= set(saved)


def test_the_monitor_shows_the_age_of_a_carried_accuracy_only(
    default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    messages = measured_every_k(default_bundle, digits_nic, tmp_path / "state")
    telemetry = [m for m in messages if isinstance(m, Telemetry)]
    for upto, age in ((5, 3), (6, None)):  # event 5 carries event 3's; event 6 measured it
        rec = DeviceRecord(DEVICE)
        for message in telemetry[:upto]:
            rec.add_telemetry(message, T0)
        assert rec.accuracy_age == age
        # the exporter says when the accuracy it serves was measured
        gauges = {m.name: m for m in _device_families((rec,))}
        (sample,) = gauges["vega_accuracy_measured_events"].samples
        assert sample.value == (upto if age is None else age)
        monitor = FleetMonitor(BrokerURL("127.0.0.1", 1884))  # never entered: its records only
        monitor.devices[DEVICE] = rec
        console = Console(width=80, record=True)
        console.print(monitor_table(monitor, max_rows=10, width=80))
        shown = console.export_text()
        assert all(len(line) <= 80 for line in shown.splitlines())
        assert rec.accuracy is not None
        expected = f"{rec.accuracy:.3f}" + ("" if age is None else f"@{age}")
        assert expected in shown
        if age is None:
            assert "@" not in shown.split(f"{rec.accuracy:.3f}", 1)[1].split()[0]
