"""The harvest and the energy policy where a fleet is watched: the monitor's fleet line, from
the telemetry and the ``energy_policy`` answers of real engines (handed in, no broker)."""

from __future__ import annotations

from pathlib import Path

from broker import BrokerURL
from dataset_stream import Scenario
from dataset_stream.protocol import Batch
from device.cli._monitor_view import fleet_line
from device.learning.nn import SGDConfig
from device.model.bundle import ModelBundle
from device.model.frozen import FrozenStage
from device.node.engine import NodeEngine
from device.node.settings import Hardware, NodeSettings, PowerSettings
from device.observe.monitor import FleetMonitor
from tests.support.times import T0

URL = BrokerURL(host="127.0.0.1", port=1)  # never connected: messages are handed in
DEVICE = "node-0003"


def test_the_monitor_shows_the_harvest_and_the_policy_skips_only_when_reported(
    default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    settings = NodeSettings(
        DEVICE,
        tmp_path,
        sgd=SGDConfig(learning_rate=0.05),
        hardware=Hardware(battery_j=0.3, initial_soc=1.0),
        power=PowerSettings(policy="soc-threshold:0.6", harvest="constant:0.00001"),
    )
    eng = NodeEngine(settings, default_bundle, FrozenStage.shared(default_bundle))
    monitor = FleetMonitor(URL)
    assert "harvested" not in fleet_line(monitor) and "energy policy" not in fleet_line(monitor)
    harvest_j = 0.0
    try:
        for i, e in enumerate(digits_nic.events(DEVICE)[1:6], 1):
            outcome = eng.apply(Batch(e.x, e.y, seq=i, t=T0 + 60 * i, source="t"))
            harvest_j += outcome.telemetry.energy_j["harvest"]
            if outcome.refusal is None:
                monitor.handle(f"vega/{DEVICE}/telemetry", outcome.telemetry.to_json())
            else:
                monitor.handle(f"vega/{DEVICE}/error", outcome.refusal.to_json())
    finally:
        eng.close()
    assert monitor.policy_skipped > 0
    line = fleet_line(monitor)
    assert f"{monitor.policy_skipped} events skipped by the energy policy" in line
    assert monitor.harvest_j is not None and "J harvested" in line
    assert sum(sum(rec.rejected.values()) for rec in monitor.devices.values()) == 0
