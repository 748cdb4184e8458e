"""Re-runs continue: a node's retained status names its last seq after every event, and
``stream`` and ``bridge`` go on after it (``--from-seq`` to choose), refusing with one line and
exit status 4 when what they would send was learned before or no events are left; the monitor
knows every node's last state from the moment it connects."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker import EmbeddedBroker
from broker.url import BrokerURL
from dataset_stream.continuation import plan_seqs
from dataset_stream.outcome import NOTHING_LEARNED_EXIT_STATUS, Delivery
from dataset_stream.protocol import Status
from device.fleet.fleet import Fleet
from device.model.bundle import ModelBundle
from device.node.settings import DeliverySettings, NodeSettings
from device.observe.monitor import FleetMonitor
from tests.support.wait import wait_until

DEVICES = ["node-0000", "node-0001"]


def test_the_plan_continues_after_each_last_seq() -> None:
    plan = plan_seqs({"a": 3, "b": None}, {"a": 77, "b": 77, "c": 77}, events=3)
    assert dict(plan.ranges) == {"a": (4, 6), "b": (1, 3), "c": (1, 3)}
    assert not plan.refused and plan.total == 9 and plan.continued == {"a": 4}
    assert plan.seqs_text() == "seqs 1-6"
    tail = plan_seqs({"a": 75}, {"a": 77}, events=3)
    assert dict(tail.ranges) == {"a": (76, 77)}  # what is left


def test_the_plan_refuses_seqs_learned_before_and_an_exhausted_scenario() -> None:
    again = plan_seqs({"a": 3, "b": 2, "c": None}, dict.fromkeys("abc", 77), from_seq=1)
    assert again.refused and dict(again.learned_before) == {"a": 3, "b": 2}
    assert again.refusal_line() == (
        "nothing sent: --from-seq 1 would send seqs learned before to 2 device(s): a (learned "
        "up to 3), b (learned up to 2); leave --from-seq out to continue after each device's "
        "last seq"
    )
    done = plan_seqs({"a": 77, "b": 3}, {"a": 77, "b": 77}, events=3)
    assert done.refused and dict(done.exhausted) == {"a": 77}
    assert "no events left for 1 device(s): a (learned up to 77 of 77)" in done.refusal_line()
    assert plan_seqs({"a": 3}, {"a": 77}, from_seq=4).ranges == {"a": (4, 77)}


def test_the_plan_says_which_devices_get_fewer_events_than_asked() -> None:
    plan = plan_seqs({"a": 3, "b": None}, {"a": 77, "b": 77, "c": 10}, events=100)
    assert plan.short == {"a": 74, "b": 77, "c": 10}
    names = {"a": "digits / nic", "b": "digits / nic", "c": "watch / nic"}
    assert plan.short_line(names.__getitem__) == (
        "digits / nic has 77 events per device; sending 74-77 of the 100 asked (seqs 1-77); "
        "watch / nic has 10 events per device; sending 10 of the 100 asked (seqs 1-10)"
    )
    enough = plan_seqs({"a": 3}, {"a": 77}, events=5)
    assert enough.short == {} and enough.short_line(names.__getitem__) == ""
    assert plan_seqs({"a": 3}, {"a": 77}).short == {}  # all that are left: none is short


def test_a_run_that_learned_nothing_fails() -> None:
    duplicates = Delivery(planned=6, sent=6, duplicates=6)
    assert duplicates.complete and duplicates.nothing_learned
    assert duplicates.exit_status == NOTHING_LEARNED_EXIT_STATUS
    assert duplicates.failure_line() == (
        "none of the 6 batch(es) sent was learned: 6 duplicate (learned before), 0 refused, "
        "0 lost in gaps"
    )
    some = Delivery(planned=6, sent=6, learned=1, duplicates=5)
    assert some.exit_status == 0 and some.failure_line() == ""
    assert Delivery(planned=0, sent=0).exit_status == 0  # nothing to send is not a failure


@pytest.fixture
async def fleet(
    embedded_broker: EmbeddedBroker, default_bundle: ModelBundle, tmp_path: Path
) -> AsyncIterator[BrokerURL]:
    """Two real nodes on a real broker; a batch held for a missing seq waits 0.2 s."""
    url = embedded_broker.url

    def settings(device: str) -> NodeSettings:
        return NodeSettings(device, tmp_path / "state", delivery=DeliverySettings(hold_s=0.2))

    async with Fleet(DEVICES, settings, default_bundle, url) as running:
        async with asyncio.timeout(60):
            for node in running.nodes.values():
                await node.connected.wait()
        yield url


async def vega(*args: str) -> tuple[int, str]:
    """``vega-emu ARGS`` as a user runs it: its exit status and its output (one line each)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "device.cli", *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200"},
    )
    async with asyncio.timeout(120):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode() + err.decode()


def stream_args(url: BrokerURL, *more: str) -> list[str]:
    broker = f"mqtt://127.0.0.1:{url.port}"
    return ["stream", "--broker", broker, "--devices", "2", "--speed", "max", *more]


def errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


async def test_a_second_stream_learns_the_next_seqs_and_a_rerun_from_1_is_refused(
    fleet: BrokerURL,
) -> None:
    code, text = await vega(*stream_args(fleet, "--events", "3"))
    assert code == 0, text
    assert "sent 6/6 events to 2 devices (seqs 1-3)" in text
    code, text = await vega(*stream_args(fleet, "--events", "3"))
    assert code == 0, text
    assert "sent 6/6 events to 2 devices (seqs 4-6)" in text
    assert "answered 6 of 6 batch(es): 6 learned, 0 duplicate" in text
    code, text = await vega(*stream_args(fleet, "--events", "3", "--from-seq", "1"))
    assert code == NOTHING_LEARNED_EXIT_STATUS, text
    assert errors(text) == [
        "error: nothing sent: --from-seq 1 would send seqs learned before to 2 device(s): "
        "node-0000 (learned up to 6), node-0001 (learned up to 6); leave --from-seq out to "
        "continue after each device's last seq"
    ], text
    # the scenario's last event (77, after a gap the nodes skip at once), then nothing is left
    # of the finite scenario
    code, text = await vega(*stream_args(fleet, "--from-seq", "77"))
    assert code == 0, text
    assert "1 event x 2 devices (seq 77)" in text
    code, text = await vega(*stream_args(fleet))
    assert code == NOTHING_LEARNED_EXIT_STATUS, text
    assert errors(text) == [
        "error: nothing sent: no events left for 2 device(s): node-0000 (learned up to 77 of "
        "77), node-0001 (learned up to 77 of 77); start their nodes on fresh state to stream "
        "the scenario again"
    ], text
    # but --events goes on into generated events
    code, text = await vega(*stream_args(fleet, "--events", "3"))
    assert code == 0, text
    assert "sent 6/6 events to 2 devices (seqs 78-80)" in text
    assert "answered 6 of 6 batch(es): 6 learned, 0 duplicate" in text


async def test_events_past_the_scenarios_last_are_generated_not_capped(
    fleet: BrokerURL,
) -> None:
    code, text = await vega(*stream_args(fleet, "--from-seq", "76", "--events", "5"))
    assert code == 0, text
    assert "digits / nic: 10 classes, sample [1, 32, 32] uint8, 77 events" in text
    assert "events past 77 are generated: no drift, each class away 100 of every 300 events" in text
    assert "5 events x 2 devices, each from seq 76" in text
    assert not [line for line in text.splitlines() if "events per device" in line], text
    assert "sent 10/10 events to 2 devices (seqs 76-80)" in text
    assert "answered 10 of 10 batch(es): 10 learned, 0 duplicate" in text


async def test_a_bridge_after_a_stream_continues_its_seqs(fleet: BrokerURL, tmp_path: Path) -> None:
    code, text = await vega(*stream_args(fleet, "--events", "3"))
    assert code == 0, text
    rows = [
        {"device": d, "x": [[[(i * 7 + j) % 256 for j in range(32)] for _ in range(32)]], "y": i}
        for i in range(4)
        for d in DEVICES
    ]
    readings = tmp_path / "readings.jsonl"
    readings.write_text("".join(json.dumps({**r, "t": 1e9 + n}) + "\n" for n, r in enumerate(rows)))
    broker = f"mqtt://127.0.0.1:{fleet.port}"
    to_one = ["bridge", "--from", str(readings), "--broker", broker, "--device", "node-0000"]
    bridge = ["bridge", "--from", str(readings), "--broker", broker, "--device-field", "device"]
    code, text = await vega(*bridge, "--json")
    assert code == 0, text
    report = json.loads(text[text.index("{") : text.rindex("}") + 1])
    assert report["delivery"]["learned"] == 2 and report["delivery"]["duplicates"] == 0
    for device in DEVICES:
        assert (report["devices"][device]["first_seq"], report["devices"][device]["last_seq"]) == (
            4,
            4,
        )
    # its own earlier run, followed; then a re-run from seq 1 is refused
    code, text = await vega(*bridge, "--json")
    assert code == 0, text
    report = json.loads(text[text.index("{") : text.rindex("}") + 1])
    assert {report["devices"][d]["first_seq"] for d in DEVICES} == {5}
    code, text = await vega(*to_one, "--from-seq", "1")
    assert code == NOTHING_LEARNED_EXIT_STATUS, text
    assert errors(text) == [
        "error: nothing sent: --from-seq 1 would send seqs learned before to 1 device(s): "
        "node-0000 (learned up to 5); leave --from-seq out to continue after each device's "
        "last seq"
    ], text


async def test_a_monitor_started_after_a_run_shows_each_nodes_last_state(
    fleet: BrokerURL,
) -> None:
    code, text = await vega(*stream_args(fleet, "--events", "3"))
    assert code == 0, text
    async with FleetMonitor(fleet) as monitor:
        await wait_until(
            lambda: all(d in monitor.devices for d in DEVICES), timeout_s=10, what="statuses"
        )
    for device in DEVICES:
        rec = monitor.devices[device]
        assert rec.telemetry is None and rec.events == 0  # it saw no telemetry
        assert isinstance(rec.status, Status) and rec.status.last_seq == 3
        assert rec.node_events == 3 and rec.state == "idle"
        assert rec.accuracy is not None and 0 <= rec.accuracy <= 1
        assert rec.soc is not None and 0 < rec.soc <= 1 and rec.lifetime_h is not None
    broker = f"mqtt://127.0.0.1:{fleet.port}"
    code, text = await vega("monitor", "--broker", broker, "--once-after", "1")
    assert code == 0, text
    rows = [line for line in text.splitlines() if "node-000" in line]
    assert len(rows) == 2 and all(" 3 " in row for row in rows), text
