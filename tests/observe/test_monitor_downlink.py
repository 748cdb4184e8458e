"""The downlink seen by the observers: the monitor reads desired, reported and rollout states
from a real broker, Prometheus serves the versions, convergence and rollouts, the recorder keeps
the rollout steps (an older recording reads as none) and the report draws their timeline."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import aiomqtt

from dataset_stream.protocol import DesiredState, Refusal, ReportedState, RolloutState
from device.observe.exporter import MetricsServer
from device.observe.monitor import FleetMonitor
from device.observe.recorder import RunRecorder, load_run
from device.observe.report import render_report
from tests.support.messages import report
from tests.support.metrics import scrape, value
from tests.support.times import NOW

SETTINGS: dict[str, Any] = {"lr_bits": 6, "head": "own"}


def _steps() -> list[RolloutState]:
    stages = [5.0, 25.0, 100.0]
    return [
        RolloutState("v2", "v2", "staging", 0, stages, ["node-0001"], ts=NOW),
        RolloutState("v2", "v2", "soaking", 0, stages, ["node-0001"], ts=NOW),
        RolloutState("v2", "v2", "halted", 0, stages, ["node-0001"], "accuracy_drop", ts=NOW),
        RolloutState("v2", "v2", "rolled_back", 0, stages, ["node-0001"], "accuracy_drop"),
    ]


async def test_monitor_and_metrics_follow_desired_reported_and_rollouts(
    embedded_broker: Any, tmp_path: Path
) -> None:
    url = embedded_broker.url
    a, b, c = "node-0000", "node-0001", "node-0002"
    refusal = Refusal(2, "settings.lr_bits", "no room")
    messages = [
        (f"vega/{a}/telemetry", report(a, 1)),
        (f"vega/{a}/desired", DesiredState(a, 3, {"lr_bits": 6}).to_json()),
        (f"vega/{a}/reported", ReportedState(a, 3, SETTINGS).to_json()),
        (f"vega/{b}/desired", DesiredState(b, 2, {"lr_bits": 6}).to_json()),
        (f"vega/{b}/reported", ReportedState(b, 1, SETTINGS).to_json()),
        (f"vega/{c}/desired", DesiredState(c, 2, {"lr_bits": 4}).to_json()),
        (f"vega/{c}/reported", ReportedState(c, 1, SETTINGS, refused=refusal).to_json()),
        (f"vega/{c}/reported", ReportedState(a, 1, SETTINGS).to_json()),  # foreign
        (f"vega/{c}/desired", b"{"),  # invalid
        *((f"vega/rollout/{s.name}/state", s.to_json()) for s in _steps()[:2]),
        ("vega/rollout/other/state", _steps()[0].to_json()),  # foreign: another name
    ]
    recording = tmp_path / "run.sqlite"
    with RunRecorder(recording, meta={"command": "monitor"}) as recorder:
        async with (
            FleetMonitor(url, clock=lambda: NOW, on_rollout=recorder.add_rollout) as monitor,
            MetricsServer(monitor, port=0) as server,
            aiomqtt.Client(**url.client_kwargs()) as operator,
        ):
            for where, payload in messages:
                await operator.publish(where, payload, qos=1)
            async with asyncio.timeout(10):
                await monitor.wait_handled(len(messages))
            got = await asyncio.to_thread(scrape, server.url)
            for step in _steps()[2:]:
                await operator.publish("vega/rollout/v2/state", step.to_json(), qos=1)
            async with asyncio.timeout(10):
                await monitor.wait_handled(len(messages) + 2)
            later = await asyncio.to_thread(scrape, server.url)

    records = monitor.devices
    assert (records[a].desired_version, records[a].reported_version) == (3, 3)
    assert [records[d].converged for d in (a, b, c)] == [True, False, False]
    assert records[c].refused_version == 2
    assert (monitor.foreign, monitor.invalid) == (2, 1)
    assert value(got, "vega_config_version", device=a) == 3
    assert value(got, "vega_config_version", device=b) == 1
    assert value(got, "vega_devices_not_converged") == 2
    assert value(got, "vega_rollout_stage", rollout="v2") == 5
    assert value(got, "vega_rollout_state", rollout="v2", state="soaking") == 1
    assert value(got, "vega_rollout_state", rollout="v2", state="staging") == 0
    assert value(later, "vega_rollout_state", rollout="v2", state="rolled_back") == 1

    run = load_run(recording)
    assert [r.state for r in run.rollouts] == ["staging", "soaking", "halted", "rolled_back"]
    assert run.rollouts[-1].percent == 5 and run.rollouts[-1].devices == 1
    index = render_report(recording, tmp_path / "report")
    page = index.read_text()
    assert "<table id='rollouts'>" in page
    assert "v2: rolled_back at stage 1 (5 %), accuracy_drop" in page


def test_a_recording_without_rollouts_reads_as_none_and_says_so(tmp_path: Path) -> None:
    recording = tmp_path / "old.sqlite"
    with RunRecorder(recording, meta={"command": "monitor"}):
        pass
    with sqlite3.connect(recording) as db:  # as a recording made before rollouts were kept
        db.execute("DROP TABLE rollout")
    assert load_run(recording).rollouts == ()
    page = render_report(recording, tmp_path / "report").read_text()
    assert "No rollouts in this run." in page
