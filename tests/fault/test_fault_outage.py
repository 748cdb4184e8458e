"""The broker dies mid-run under real nodes and a real stream: all back, every seq learned once.

Mosquitto (persistence on) is killed with SIGKILL while two nodes learn from a paced stream,
and started again on the same port and data directory 2 s later (once with a session per node,
once with both nodes behind one shared gateway connection). What it had not saved is gone
(its queues are saved every 60 s and on a clean stop), so the stream's re-publishing and the
nodes' seq rules must make up for it: both nodes and the stream must be back within 10 s of the
restart, and every node's state file must hold every seq exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from broker import Mosquitto
from broker.backoff import Backoff
from dataset_stream import Scenario, StreamPublisher
from dataset_stream.reconnect import ReconnectPolicy
from device.fleet.fleet import Fleet
from device.fleet.gateway import Gateway
from device.learning.nn import SGDConfig
from device.model.bundle import ModelBundle
from device.node.settings import NodeSettings
from tests.support.times import T0
from tests.support.wait import wait_until

pytestmark = pytest.mark.fault

EVENTS = 20
IDS = ["node-0000", "node-0001"]


async def learned(fleet: Fleet, seq: int) -> None:
    """Until every node of ``fleet`` has learned up to ``seq`` (the nodes' own counters, which
    offer no event)."""

    def lowest() -> int:
        return min((n.engine.last_seq or 0) if n.engine else 0 for n in fleet.nodes.values())

    await wait_until(lambda: lowest() >= seq, timeout_s=120, what=f"every node learned seq {seq}")


@pytest.mark.parametrize("shared", [False, True], ids=["own-sessions", "gateway"])
async def test_real_nodes_and_stream_ride_out_a_killed_broker(
    mosquitto: Mosquitto,
    default_bundle: ModelBundle,
    digits_nic: Scenario,
    tmp_path: Path,
    shared: bool,
) -> None:
    url = mosquitto.url
    state = tmp_path / "state"
    loop = asyncio.get_running_loop()

    def settings(device: str) -> NodeSettings:
        return NodeSettings(device, state, sgd=SGDConfig(learning_rate=0.05))

    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(asyncio.timeout(240))
        gateway = None
        if shared:  # one connection for both nodes (vega-emu fleet --connection shared)
            gateway = Gateway(url, "gw-test", "vega", IDS, backoff=Backoff(0.1, 1.0))
            await stack.enter_async_context(gateway)
        fleet = await stack.enter_async_context(
            Fleet(IDS, settings, default_bundle, url, gateway=gateway)
        )
        stream = await stack.enter_async_context(
            StreamPublisher(
                url,
                digits_nic,
                IDS,
                speed=300.0,  # one event every 0.2 s
                events=EVENTS,
                t0=T0,
                wait_for_answers=True,
                reconnect=ReconnectPolicy(initial_s=0.1, cap_s=1.0, max_outage_s=60.0),
            )
        )
        run = asyncio.create_task(stream.run())
        await learned(fleet, 4)
        await mosquitto.kill()
        await asyncio.sleep(2.0)  # the outage under test: the broker is away this long
        await mosquitto.start()
        restarted = loop.time()
        async with asyncio.timeout(10):  # every node reconnects by itself within 10 s
            await asyncio.gather(*(n.connected.wait() for n in fleet.nodes.values()))
        assert loop.time() - restarted < 10
        stats = await run
    assert stats.link.reconnects >= 1 and stats.link.outage_s >= 2.0
    assert (stats.sent, stats.acked, stats.rejected, stats.lost) == (40, 40, 0, 0)
    if gateway is not None:
        assert gateway.connections >= 2
    for device in IDS:
        with sqlite3.connect(state / f"{device}.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            rows = db.execute("SELECT seq, outcome FROM events ORDER BY seq").fetchall()
            counters = db.execute("SELECT last_seq, events_applied, gaps FROM state").fetchone()
        assert rows == [(s, "learned") for s in range(1, EVENTS + 1)], device
        assert counters == (EVENTS, EVENTS, 0), device
