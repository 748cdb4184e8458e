"""The radio's share where a fleet is watched: the monitor's fleet line, Prometheus'
``vega_energy_joules`` and the HTML report, from the telemetry of real engines."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

from broker import BrokerURL
from dataset_stream import Scenario
from dataset_stream.protocol import Batch, Telemetry
from device.cli._monitor_view import fleet_line
from device.learning.nn import SGDConfig
from device.model.bundle import ModelBundle
from device.model.frozen import FrozenStage
from device.node.engine import NodeEngine
from device.node.settings import NodeSettings, PowerSettings
from device.observe.exporter import FleetSnapshot, families
from device.observe.monitor import FleetMonitor
from device.observe.recorder import RunRecorder
from device.observe.report import render_report
from tests.support.times import T0

URL = BrokerURL(host="127.0.0.1", port=1)  # never connected: messages are handed in


def telemetry(
    bundle: ModelBundle, scenario: Scenario, state_dir: Path, device: str, radio: str
) -> list[Telemetry]:
    settings = NodeSettings(
        device, state_dir, sgd=SGDConfig(learning_rate=0.05), power=PowerSettings(radio=radio)
    )
    eng = NodeEngine(settings, bundle, FrozenStage.shared(bundle))
    try:
        return [
            eng.apply(Batch(e.x, e.y, seq=i, t=T0 + 60 * i, source="t")).telemetry
            for i, e in enumerate(scenario.events(device)[:3], 1)
        ]
    finally:
        eng.close()


def energy_table(page: str) -> dict[str, str]:
    section = page.split("Energy by phase", 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td>", section)
    return {html.unescape(p): v for p, v in rows}


def test_the_radio_share_is_shown_only_when_a_node_reports_one(
    default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    plain = telemetry(default_bundle, digits_nic, tmp_path, "node-0000", "none")
    ble = telemetry(default_bundle, digits_nic, tmp_path, "node-0001", "ble")
    monitor = FleetMonitor(URL)
    for t in plain:
        monitor.handle("vega/node-0000/telemetry", t.to_json())
    assert monitor.radio_share is None and "radio" not in fleet_line(monitor)
    metrics = {m.name: m for m in families(FleetSnapshot.of(monitor))}
    assert {s.labels["phase"] for s in metrics["vega_energy_joules"].samples} == {
        "frozen",
        "adaptive",
        "memory",
        "idle",
    }
    for t in ble:
        monitor.handle("vega/node-0001/telemetry", t.to_json())
    radio_j = sum(t.energy_j["radio"] for t in ble)
    total_j = sum(t.energy_j["total"] for t in plain + ble)
    assert monitor.radio_share == pytest.approx(radio_j / total_j)
    assert f"radio {radio_j / total_j:.1%} of the energy" in fleet_line(monitor)
    metrics = {m.name: m for m in families(FleetSnapshot.of(monitor))}
    radio = [
        s.value
        for s in metrics["vega_energy_joules"].samples
        if s.labels["phase"] == "radio" and s.name.endswith("_total")
    ]
    assert radio == [pytest.approx(radio_j)]  # node-0001 only

    run = tmp_path / "run.sqlite"
    with RunRecorder(run, meta={"command": "up"}) as recorder:
        for device, series in (("node-0000", plain), ("node-0001", ble)):
            for t in series:
                recorder.add(device, t, t.t + 0.2)
    index = render_report(run, tmp_path / "report")
    table = energy_table(index.read_text(encoding="utf-8"))
    assert set(table) == {"frozen", "adaptive", "memory", "idle", "radio"}
