"""A shared-connection fleet on a secured Mosquitto: passwords, the ACL, client ids bound to users.

``vega-emu fleet --connection shared --credentials users.txt`` logs each worker's one connection
in as its gateway user (``gw-{first}-{count}``), which the generated ACL lets read its own
devices' inputs, write their reports and its own gateway status -- nothing else. The fleet
learns every batch of a closed-loop stream (user ``stream``) exactly once, and the monitor
(user ``monitor``) sees both gateways online. Another gateway's login, even connecting under
the victim's client id, can neither overwrite a gateway's status nor read its devices' inputs.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path

import aiomqtt
import pytest

from broker import Mosquitto, MosquittoConfig
from broker.url import BrokerURL
from dataset_stream import Scenario, StreamPublisher
from dataset_stream.protocol import GatewayStatus, fleet_ids
from device.model.bundle import ModelBundle
from device.observe.monitor import FleetMonitor
from tests.support.cli import Command
from tests.support.mosquitto import require_mosquitto
from tests.support.wait import wait_for_monitor

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

IDS = fleet_ids(4)
GATEWAYS = ["gw-node-0000-2", "gw-node-0002-2"]  # what 4 nodes in 2 workers are served by
INTRUDER = "gw-node-0000-1"  # a gateway user of the ACL too, of node-0000 only
USERS = {GATEWAYS[0]: "g0", GATEWAYS[1]: "g1", INTRUDER: "gi", "stream": "ps", "monitor": "pm"}
EVENTS = 3


def events_in(db: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute("SELECT seq, outcome FROM events ORDER BY seq"))


async def retained_state(url: BrokerURL, gateway: str) -> str:
    """The state of the retained status of ``gateway``, as a new monitor reads it."""
    monitor = url.with_credentials("monitor", USERS["monitor"])
    async with aiomqtt.Client(**monitor.client_kwargs()) as c:
        await c.subscribe(f"vega/gateway/{gateway}/status", qos=1)
        async with asyncio.timeout(10):
            message = await anext(aiter(c.messages))
    assert isinstance(message.payload, bytes)
    return GatewayStatus.from_json(message.payload).state


async def test_a_shared_fleet_on_a_secured_broker_learns_and_its_gateways_are_kept_apart(
    default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    require_mosquitto()
    users = tmp_path / "users.txt"
    users.write_text("".join(f"{u}:{p}\n" for u, p in USERS.items()))
    users.chmod(0o600)
    config = MosquittoConfig(data_dir=tmp_path / "mq", password_file=users, acl_devices=tuple(IDS))
    async with Mosquitto(config) as broker:
        url = broker.url
        acl = (tmp_path / "mq" / "acl").read_text()
        assert f"topic write vega/gateway/{GATEWAYS[0]}/status" in acl
        args = ["fleet", "-n", "4", "--workers", "2", "--connection", "shared"]
        args += ["--credentials", str(users), "--broker", str(url)]
        args += ["--state-dir", str(tmp_path / "state"), "--model", str(default_bundle.path)]
        monitor_url = url.with_credentials("monitor", USERS["monitor"])
        async with (
            Command(args) as fleet,
            FleetMonitor(monitor_url, client_id="monitor") as monitor,
        ):
            await fleet.wait_for("fleet: 4 nodes in 2 worker(s)", timeout_s=120)
            await wait_for_monitor(
                monitor,
                lambda: monitor.gateways == dict.fromkeys(GATEWAYS, "online"),
                timeout_s=30,
                what="both gateways online",
            )
            stream_url = url.with_credentials("stream", USERS["stream"])
            async with StreamPublisher(
                stream_url,
                digits_nic,
                IDS,
                speed=None,
                events=EVENTS,
                client_id="stream",
                ack_timeout_s=120,
            ) as stream:
                async with asyncio.timeout(180):
                    stats = await stream.run()
            assert (stats.acked, stats.rejected) == (EVENTS * len(IDS), 0)

            # another gateway's login: its own client id, whatever it asks for (bound to the
            # user), and its own topics only (the ACL)
            intruder = url.with_credentials(INTRUDER, USERS[INTRUDER])
            forged = GatewayStatus(GATEWAYS[1], "offline", IDS[2:]).to_json()
            async with (
                aiomqtt.Client(**intruder.client_kwargs(), identifier=GATEWAYS[1]) as c,
                aiomqtt.Client(**stream_url.client_kwargs()) as producer,
            ):
                await c.publish(f"vega/gateway/{GATEWAYS[1]}/status", forged, qos=1, retain=True)
                # Mosquitto grants any subscription and checks reads on delivery: a probe to
                # another gateway's device never arrives, one to its own device does, after it
                theirs, mine = f"vega/{IDS[2]}/infer", f"vega/{IDS[0]}/infer"
                await c.subscribe([(theirs, 1), (mine, 1)])
                for where in (theirs, mine):
                    await producer.publish(where, b"probe", qos=1)
                async with asyncio.timeout(10):
                    got = [str((await anext(aiter(c.messages))).topic)]
            assert got == [mine]
            assert await retained_state(url, GATEWAYS[1]) == "online"
            assert monitor.gateways[GATEWAYS[1]] == "online"
            fleet.send(signal.SIGTERM)
            await fleet.ended_within(10)
    assert fleet.returncode == 0, fleet.stderr
    assert "Traceback" not in fleet.stderr
    for device in IDS:
        got = events_in(tmp_path / "state" / f"{device}.db")
        assert got == [(s, "learned") for s in range(1, EVENTS + 1)], device
