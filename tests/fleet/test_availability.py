"""Devices that go offline and come back: traces and seeded models, replayed on real brokers.

Offline is an unclean drop (the broker fires the node's will) on a node's own session, and the
node's ``offline`` status through the shared connection of a gateway; batches sent meanwhile
wait at the broker (``wait``) or are lost (``miss``); the windows a monitor observes are the
trace's, within the pacing resolution.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from broker import BrokerURL
from broker.session import Session
from dataset_stream import Scenario, StreamPublisher
from dataset_stream.protocol import Status, encode_batch, topic
from device.fleet.availability import AvailabilityModel, Durations, Follower, Window, read_trace
from device.fleet.errors import FleetSpecError
from device.fleet.fleet import Fleet
from device.fleet.gateway import Gateway
from device.learning.nn import SGDConfig
from device.model.bundle import ModelBundle
from device.node.node import Node
from device.node.presence import Presence
from device.node.settings import DeliverySettings, NodeSettings
from device.observe.monitor import FleetMonitor
from tests.support.mosquitto import require_mosquitto
from tests.support.times import T0
from tests.support.wait import wait_for_monitor, wait_until

IDS = ["node-0000", "node-0001"]
#: Simulated seconds per wall second of the replayed traces.
SPEED = 2.0
#: How far an observed switch may be from the trace's, in wall seconds: a will is sent when the
#: broker sees the socket close, a return when the node has reconnected and said so.
RESOLUTION_S = 0.75
TRACE = "device,start_s,end_s\nnode-0000,2,6\nnode-0001,4,10\nnode-0000,10,14\n"


def settings(device: str, state_dir: Path) -> NodeSettings:
    return NodeSettings(
        device,
        state_dir,
        sgd=SGDConfig(learning_rate=0.05),
        delivery=DeliverySettings(hold_s=0.5),
    )


# -- traces and models, no broker -----------------------------------------------------------------


def test_a_trace_reads_into_sorted_windows_and_bad_lines_are_named(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text(TRACE, encoding="utf-8")
    assert read_trace(path) == {
        "node-0000": (Window(2, 6), Window(10, 14)),
        "node-0001": (Window(4, 10),),
    }
    for text, named in [
        ("client,start,end\n", "header must be device,start_s,end_s"),
        ("device,start_s,end_s\nnode-0000,5,5\n", "line 2: offline window needs"),
        ("device,start_s,end_s\nnode-0000,x,5\n", "line 2"),
        ("device,start_s,end_s\nnode-0000,1,5\nnode-0000,4,8\n", "overlap"),
        ("device,start_s,end_s\nnode-0000,1\n", "line 2"),
    ]:
        path.write_text(text, encoding="utf-8")
        with pytest.raises(FleetSpecError, match=named):
            read_trace(path)


def test_model_windows_come_from_seed_and_id_and_a_longer_horizon_only_adds() -> None:
    model = AvailabilityModel(
        up=Durations("weibull", shape=0.7, scale_s=3600.0),
        down=Durations("exponential", mean_s=900.0),
    )
    day = model.windows(5, "node-0003", 86400.0)
    week = model.windows(5, "node-0003", 7 * 86400.0)
    assert day and week[: len(day)] == day and len(week) > len(day)
    assert model.windows(5, "node-0003", 86400.0) == day
    assert model.windows(6, "node-0003", 86400.0) != day
    assert model.windows(5, "node-0004", 86400.0) != day
    assert all(a.end_s <= b.start_s for a, b in itertools.pairwise(week))
    assert AvailabilityModel.from_table(model.to_table()) == model


# -- on a broker ----------------------------------------------------------------------------------


def observed_windows(
    log: list[tuple[str, str, float, int | None]], device: str, start: float
) -> list[tuple[float, float]]:
    """``device``'s offline stretches as the monitor saw them, in wall seconds from ``start``."""
    out: list[tuple[float, float]] = []
    down: float | None = None
    for who, state, at, _ in log:
        if who != device:
            continue
        if state == "offline" and down is None:
            down = at - start
        elif state != "offline" and down is not None:
            out.append((down, at - start))
            down = None
    return out


def assert_learned_once(state_dir: Path, device: str, seqs: range) -> None:
    with sqlite3.connect(state_dir / f"{device}.db") as db:
        rows = db.execute("SELECT seq, outcome FROM events ORDER BY seq").fetchall()
    assert rows == [(seq, "learned") for seq in seqs], device


@pytest.mark.parametrize("shared", [False, True], ids=["own-session", "gateway"])
async def test_a_trace_replays_exactly_offline_by_the_will_and_every_batch_learned_once(
    shared: bool,
    mosquitto: Any,
    default_bundle: ModelBundle,
    digits_nic: Scenario,
    tmp_path: Path,
) -> None:
    require_mosquitto()
    url: BrokerURL = mosquitto.url
    trace = tmp_path / "trace.csv"
    trace.write_text(TRACE, encoding="utf-8")
    windows = read_trace(trace)
    log: list[tuple[str, str, float, int | None]] = []

    def seen(device: str, message: object, received: float) -> None:
        if isinstance(message, Status):
            log.append((device, message.state, time.monotonic(), message.last_seq))

    presences = {d: Presence() for d in IDS}
    async with FleetMonitor(url, on_message=seen) as monitor, contextlib.AsyncExitStack() as stack:
        gateway = None
        if shared:
            gateway = await stack.enter_async_context(Gateway(url, "gw-test", "vega", IDS))
        fleet = Fleet(
            IDS,
            lambda d: settings(d, tmp_path),
            default_bundle,
            url,
            gateway=gateway,
            presences=presences,
            follower=Follower(windows, SPEED),
        )
        async with fleet:
            start = time.monotonic()
            async with StreamPublisher(
                url, digits_nic, IDS, speed=None, events=12, t0=T0
            ) as stream:
                stats = await stream.run()

            def returned() -> bool:
                return all(len(observed_windows(log, d, start)) == len(windows[d]) for d in IDS)

            await wait_for_monitor(monitor, returned, 30, what="every window seen to its end")
            during = list(log)  # before the fleet's clean stop
    # every batch answered; an answer lost with a dropped connection comes again as a duplicate
    assert (stats.acked, stats.rejected, stats.lost) == (24, 0, 0)
    for device in IDS:
        seen_windows = observed_windows(log, device, start)
        for (down, up), window in zip(seen_windows, windows[device], strict=True):
            assert abs(down - window.start_s / SPEED) < RESOLUTION_S, (device, seen_windows)
            assert abs(up - window.end_s / SPEED) < RESOLUTION_S, (device, seen_windows)
        assert presences[device].outages == len(windows[device])
        assert_learned_once(tmp_path, device, range(1, 13))
    offline = [(d, last) for d, state, _, last in during if state == "offline"]
    if not shared:  # the will: a status with no last seq, which a node's own never lacks
        assert offline and all(last is None for _, last in offline)
    else:  # the node says it through its gateway, as the gateway's status would
        assert offline and all(last is not None for _, last in offline)


@pytest.mark.parametrize("policy", ["wait", "miss"])
async def test_batches_sent_while_offline_wait_at_the_broker_or_are_missed(
    policy: str,
    mosquitto: Any,
    default_bundle: ModelBundle,
    digits_nic: Scenario,
    tmp_path: Path,
) -> None:
    require_mosquitto()
    url: BrokerURL = mosquitto.url
    device = IDS[0]
    events = digits_nic.events(device)[:2]
    payloads = [
        encode_batch(e.x, e.y, seq=seq, t=T0 + 60 * seq, source="test")
        for seq, e in enumerate(events, 1)
    ]
    presence = Presence(miss=policy == "miss")
    states: list[tuple[str, int | None]] = []

    def seen(who: str, message: object, received: float) -> None:
        if isinstance(message, Status):
            states.append((message.state, message.last_seq))

    producer = Session(url, "test-producer", persistent=False).client()
    async with (
        FleetMonitor(url, on_message=seen) as monitor,
        producer,
        Node(settings(device, tmp_path), default_bundle, url, presence=presence) as node,
    ):
        await asyncio.wait_for(node.connected.wait(), 30)
        presence.go_offline()
        await wait_for_monitor(
            monitor, lambda: ("offline", None) in states, 15, what="the node's will"
        )
        await producer.publish(topic("vega", device, "batch"), payloads[0], qos=1)
        presence.go_online()
        await wait_until(lambda: node.connections == 2, 30, what="the node back")
        await producer.publish(topic("vega", device, "batch"), payloads[1], qos=1)
        await wait_until(
            lambda: node.engine is not None and node.engine.last_seq == 2, 30, what="seq 2 handled"
        )
    with sqlite3.connect(tmp_path / f"{device}.db") as db:
        rows = db.execute("SELECT seq, outcome FROM events ORDER BY seq").fetchall()
    if policy == "wait":
        assert rows == [(1, "learned"), (2, "learned")]
    else:  # seq 1 was sent while the device was away: never delivered, a gap
        assert rows == [(2, "learned")]


async def test_the_same_seed_runs_the_same_devices_values_and_offline_windows_twice(
    default_bundle: ModelBundle, tmp_path: Path
) -> None:
    from dataset_stream import build_scenario
    from dataset_stream.pacing import Pacing
    from device.app.up import Up, UpConfig
    from device.cli.up_cmd import _fleet_extra
    from device.fleet.spec import FleetSpec
    from device.observe.recorder import load_run

    spec_file = tmp_path / "fleet.toml"
    spec_file.write_text(
        "seed = 3\n[availability]\nhorizon_s = 12\n"
        '[[class]]\nname = "a"\ncount = 2\n'
        'battery_j = {dist = "uniform", low = 20000, high = 40000}\n'
        'availability.up = {dist = "exponential", mean_s = 3}\n'
        'availability.down = {dist = "weibull", shape = 5, scale_s = 4}\n'
        '[[class]]\nname = "b"\ncount = 1\nprofile = "stm32l4"\noffline_batches = "miss"\n'
        'availability.up = {dist = "weibull", shape = 1.5, scale_s = 4}\n'
        'availability.down = {dist = "weibull", shape = 5, scale_s = 4}\n',
        encoding="utf-8",
    )
    # down times of about 4 simulated s (1 wall s): long enough for an embedded broker to see
    # each drop before the node is back
    scenario = build_scenario("digits", "nic", seed=0)
    runs = []
    for run in range(2):
        spec = FleetSpec.load(spec_file)
        where = tmp_path / f"run{run}"
        where.mkdir()
        settings_of = {
            m.device_id: m.device_class.for_device(spec.seed, m.device_id).settings(
                m.device_id, where, default_bundle
            )
            for m in spec.members()
        }
        config = UpConfig(
            scenario=scenario,
            bundle=default_bundle,
            settings=settings_of,
            pacing=Pacing(cadence_s=1.0, speed=4.0),
            events=24,
            recording=where / "run.sqlite",
            **_fleet_extra(spec),
        )
        async with Up(config) as up:
            await up.run()
            ended = time.time()
        data = load_run(where / "run.sqlite")
        observed = {
            (s.device, s.state)
            for s in data.statuses
            if s.received < ended and s.state == "offline"
        }
        runs.append((data.meta["devices"], observed, config.offline))
    (meta, observed, offline), again = runs[0], runs[1]
    assert meta == again[0] and offline == again[2]
    assert set(meta["drawn"]) == {"node-0000", "node-0001", "node-0002"}
    assert offline  # the models take some devices offline within the run
    assert observed == again[1] == {(d, "offline") for d in offline}
