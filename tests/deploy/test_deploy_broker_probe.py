"""The deployed broker probed as an attacker would: deploy/mosquitto/init.py's config on a real
Mosquitto, real MQTT clients with the logins it generated.

The config is the compose stack's (four devices in two shards of one worker each, a credentials
file per shard; Kubernetes differs only in keeping every shard's logins in one file, see
tests/deploy/test_mosquitto_init_config.py). Every forgery the deployed stack once accepted is
tried, each next to a positive control that goes through the same path, so that nothing can pass
because nothing arrived:

- ``monitor`` and ``stream`` publishing as ``node-0000`` (telemetry, a retained status, with the
  client id ``node-0000``): never delivered, never retained, while the node's own report is;
- ``monitor`` with the client id ``node-0000`` gets none of its batches, and does not take the
  node's connection (client ids are bound to user names);
- a gateway user publishing another gateway's status or another device's status is refused, and
  its own status naming a device it does not own is ignored by the monitor for that device while
  applied to its own;
- two connections with the same gateway user take the connection from each other (the fleet
  refuses to make them: tests/fleet/test_shared_logins.py);
- a fleet shard of each connection mode, with its shard's generated credentials, learns from the
  stream and answers inference requests.

Mosquitto 2.0 grants every SUBSCRIBE and checks reads on delivery, and drops a refused publish
silently (QoS 1 still gets its PUBACK), so the assertions are on what subscribers receive. A
publish is routed before it is acknowledged and a subscriber's messages keep the order they were
routed in, so once the control that was published after the forgeries has arrived, a forgery
that got through would have arrived before it.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import signal
import socket
import sqlite3
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import numpy as np
import pytest

from broker import BrokerURL, find_mosquitto, free_port
from broker.acl import read_credentials
from dataset_stream import Scenario, StreamPublisher
from dataset_stream.protocol import GatewayStatus, Prediction, Status, encode_infer, fleet_ids
from device.model.bundle import ModelBundle
from device.observe.monitor import FleetMonitor
from tests.support.cli import Command
from tests.support.mosquitto import require_mosquitto
from tests.support.wait import wait_for_monitor, wait_until

pytestmark = [pytest.mark.mosquitto]

INIT = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "init.py"
IDS = fleet_ids(4)
GATEWAYS = ["gw-node-0000-2", "gw-node-0002-2"]  # shard 0 and shard 1, one worker each


@dataclass(frozen=True)
class Deployed:
    """A running Mosquitto on init.py's config, and the logins init.py generated."""

    port: int
    logins: dict[str, str]
    secrets: Path
    log: Path

    def url(self, user: str | None = None) -> BrokerURL:
        base = BrokerURL(host="127.0.0.1", port=self.port)
        return base if user is None else base.with_credentials(user, self.logins[user])

    def client(self, user: str, client_id: str) -> aiomqtt.Client:
        return aiomqtt.Client(
            "127.0.0.1",
            self.port,
            username=user,
            password=self.logins[user],
            identifier=client_id,
            timeout=10,
        )


@pytest.fixture
async def deployed(tmp_path: Path) -> AsyncIterator[Deployed]:
    require_mosquitto()
    port = free_port()
    secrets, data = tmp_path / "secrets", tmp_path / "data"
    data.mkdir()
    env = {
        **os.environ,
        "STREAM_PASSWORD_FILE": str(secrets / "stream"),
        "MONITOR_PASSWORD_FILE": str(secrets / "monitor"),
        "OPERATOR_PASSWORD_FILE": str(secrets / "operator"),
        "FLEET_CREDENTIALS_FILE": str(secrets / "fleet-{shard}"),  # as compose.yaml has it
        "DEVICES": "4",
        "SHARD_SIZE": "2",
        "WORKERS": "1",
        "PORT": str(port),
        "DATA_DIR": str(data),
    }
    if os.geteuid() == 0:  # no chown to the images' users; the broker stays this user
        env |= {"MOSQUITTO_USER": getpass.getuser(), "BROKER_UID": "0", "CLIENT_UID": "0"}
    init = await asyncio.create_subprocess_exec(
        sys.executable, str(INIT), str(tmp_path / "conf"), env=env
    )
    async with asyncio.timeout(60):
        assert await init.wait() == 0
    logins = {u: (secrets / u).read_text().strip() for u in ("stream", "monitor", "operator")}
    for shard in ("fleet-0", "fleet-1"):
        logins |= read_credentials(secrets / shard)
    log = tmp_path / "mosquitto.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            find_mosquitto(), "-c", str(tmp_path / "conf" / "mosquitto.conf"), stderr=out
        )
    try:

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                return False
            return True

        # another process's port: nothing to wait on but the port itself
        await wait_until(listening, timeout_s=30, what=f"mosquitto listening on port {port}")
        yield Deployed(port, logins, secrets, log)
    finally:
        process.terminate()
        await process.wait()


async def received(client: aiomqtt.Client, until: str, timeout_s: float = 10.0) -> list[str]:
    """``topic payload`` of each message ``client`` gets, up to and including one on ``until``."""
    got: list[str] = []
    async with asyncio.timeout(timeout_s):
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            got.append(f"{message.topic} {message.payload.decode()}")
            if message.topic.matches(until):
                return got
    raise AssertionError(f"the messages ended before one on {until}: {got}")


async def test_the_config_has_every_role_and_no_open_rule(deployed: Deployed) -> None:
    acl = (deployed.secrets.parent / "conf" / "acl").read_text()
    assert "pattern" not in acl
    assert sorted(deployed.logins) == sorted(["stream", "monitor", "operator", *IDS, *GATEWAYS])
    assert sorted(read_credentials(deployed.secrets / "fleet-0")) == [GATEWAYS[0], *IDS[:2]]


async def test_monitor_and_stream_cannot_pose_as_a_device(deployed: Deployed) -> None:
    # each forger is watched by the other role (one connection per user: a second 'monitor'
    # connection would take the watcher's)
    for forger_user, watcher_user in (("monitor", "stream"), ("stream", "monitor")):
        async with deployed.client(watcher_user, "watcher") as watcher:
            await watcher.subscribe([("vega/+/telemetry", 1), ("vega/+/status", 1)])
            async with deployed.client(forger_user, "node-0000") as forger:
                for qos in (0, 1):
                    forged = f"{forger_user}-{qos}"
                    await forger.publish("vega/node-0000/telemetry", forged, qos=qos)
                    await forger.publish("vega/node-0000/status", forged, qos=qos, retain=True)
            async with deployed.client("node-0000", "node-0000") as node:  # after the forgeries
                await node.publish("vega/node-0000/telemetry", "own", qos=1)
            assert await received(watcher, "vega/node-0000/telemetry") == [
                "vega/node-0000/telemetry own"
            ], forger_user
    # nothing was retained as node-0000's status: a new subscriber to it, then to a status
    # that is retained (in a second SUBSCRIBE, answered after the first), gets only the latter
    async with deployed.client("node-0001", "node-0001") as other:
        await other.publish("vega/node-0001/status", "retained", qos=1, retain=True)
    async with deployed.client("monitor", "late") as late:
        await late.subscribe("vega/node-0000/status", qos=1)
        await late.subscribe("vega/node-0001/status", qos=1)
        got = await received(late, "vega/node-0001/status")
    assert got == ["vega/node-0001/status retained"]


async def test_the_operator_sets_a_desired_state_that_no_other_role_can(
    deployed: Deployed,
) -> None:
    """``vega-emu ctl`` logs in as ``operator`` with the password file init.py made (as the
    compose and Kubernetes stacks hand it out) and its desired state is retained; the stream
    and a device writing one are dropped."""
    where = "vega/node-0001/desired"
    for forger in ("stream", "node-0001"):
        async with deployed.client(forger, forger) as c:
            await c.publish(where, f'{{"forged": "{forger}"}}', qos=1, retain=True)
    url = f"mqtt://operator@127.0.0.1:{deployed.port}"
    args = ["ctl", "set", "node-0001", "epochs=2", "--broker", url]
    async with Command([*args, "--password-file", str(deployed.secrets / "operator")]) as cmd:
        await cmd.ended_within(60)
    assert cmd.returncode == 0, cmd.stderr
    async with deployed.client("monitor", "reader") as reader:
        await reader.subscribe(where, qos=1)
        (got,) = await received(reader, where)
    assert '"version":1' in got.replace(" ", "") and "forged" not in got, got


async def test_monitor_with_a_device_client_id_gets_none_of_its_batches(
    deployed: Deployed,
) -> None:
    async with deployed.client("node-0000", "node-0000") as node:
        await node.subscribe("vega/node-0000/batch", qos=1)
        async with deployed.client("monitor", "node-0000") as poser:  # the node's client id
            await poser.subscribe([("vega/node-0000/batch", 1), ("vega/node-0000/telemetry", 1)])
            async with deployed.client("stream", "stream") as stream:
                await stream.publish("vega/node-0000/batch", "batch-1", qos=1)
            await node.publish("vega/node-0000/telemetry", "after-the-batch", qos=1)
            assert await received(poser, "vega/node-0000/telemetry") == [
                "vega/node-0000/telemetry after-the-batch"
            ]
        # the node kept its connection (the poser's id was 'monitor') and got its batch
        assert await received(node, "vega/node-0000/batch") == ["vega/node-0000/batch batch-1"]


async def test_a_gateway_speaks_only_for_its_own_devices(deployed: Deployed) -> None:
    async with FleetMonitor(deployed.url("monitor"), client_id="monitor") as monitor:
        for device in ("node-0000", "node-0002"):
            async with deployed.client(device, device) as node:
                idle = Status("idle", device=device).to_json()
                await node.publish(f"vega/{device}/status", idle, qos=1, retain=True)
        await wait_for_monitor(
            monitor,
            lambda: all(d in monitor.devices for d in ("node-0000", "node-0002")),
            timeout_s=10,
            what="both nodes idle",
        )
        theirs = GatewayStatus(GATEWAYS[1], "offline", IDS[2:]).to_json()
        own = GatewayStatus(GATEWAYS[0], "offline", ["node-0000", "node-0002"]).to_json()
        async with deployed.client(GATEWAYS[0], GATEWAYS[1]) as gateway:  # asks for the other id
            await gateway.publish(f"vega/gateway/{GATEWAYS[1]}/status", theirs, qos=1, retain=True)
            offline = Status.offline("node-0002").to_json()
            await gateway.publish("vega/node-0002/status", offline, qos=1, retain=True)
            await gateway.publish(f"vega/gateway/{GATEWAYS[0]}/status", own, qos=1, retain=True)
        await wait_for_monitor(
            monitor,
            lambda: monitor.gateways.get(GATEWAYS[0]) == "offline",
            timeout_s=10,
            what="the gateway's own status",
        )
        assert monitor.gateways == {GATEWAYS[0]: "offline"}  # the other gateway's: refused
        states = {d: r.status.state for d, r in monitor.devices.items() if r.status is not None}
        assert states == {"node-0000": "offline", "node-0002": "idle"}
        assert monitor.foreign == 1  # node-0002 in its own status: ignored, counted


async def test_two_connections_of_one_gateway_user_take_it_from_each_other(
    deployed: Deployed,
) -> None:
    async with deployed.client(GATEWAYS[1], "worker-a") as first:
        await first.subscribe("vega/node-0002/batch", qos=1)
        async with deployed.client(GATEWAYS[1], "worker-b") as second:
            with pytest.raises(aiomqtt.MqttError):
                async with asyncio.timeout(10):
                    async for _ in first.messages:  # ends when the broker closes it
                        pass
            # the second is the one connection of that user now
            await second.subscribe("vega/node-0002/batch", qos=1)
            async with deployed.client("stream", "stream") as stream:
                await stream.publish("vega/node-0002/batch", "batch-1", qos=1)
            assert await received(second, "vega/node-0002/batch") == [
                "vega/node-0002/batch batch-1"
            ]
    log = deployed.log.read_text(errors="replace")
    assert f"Client {GATEWAYS[1]} already connected, closing old connection." in log


@pytest.mark.slow
async def test_fleet_shards_with_their_generated_credentials_learn_and_infer(
    deployed: Deployed, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    """Shard 0 as compose runs it (a session per node), shard 1 as a gateway (shared)."""
    events = 2

    def shard(number: int, connection: str) -> list[str]:
        args = ["fleet", "--broker", str(deployed.url()), "--connection", connection]
        args += ["--credentials", str(deployed.secrets / f"fleet-{number}"), "--workers", "1"]
        args += ["-n", "2", "--start-index", str(2 * number)]
        args += ["--state-dir", str(tmp_path / "state"), "--model", str(default_bundle.path)]
        return args

    async with (
        Command(shard(0, "node")) as shard0,
        Command(shard(1, "shared")) as shard1,
        FleetMonitor(deployed.url("monitor"), client_id="monitor") as monitor,
    ):
        await shard0.wait_for("fleet: 2 nodes in 1 worker(s)", timeout_s=120)
        await shard1.wait_for(f"behind gateway(s) {GATEWAYS[1]}", timeout_s=120)
        async with StreamPublisher(
            deployed.url("stream"),
            digits_nic,
            IDS,
            speed=None,
            events=events,
            client_id="stream",
            ack_timeout_s=120,
        ) as stream:
            async with asyncio.timeout(180):
                stats = await stream.run()
        assert (stats.acked, stats.rejected) == (events * len(IDS), 0)
        # inference: the stream asks, each node answers on its own prediction topic
        x_test, _ = digits_nic.eval_set
        async with deployed.client("stream", "stream") as asker:
            await asker.subscribe("vega/+/prediction", qos=1)
            for device in ("node-0000", "node-0003"):
                request = encode_infer(np.asarray(x_test[:3]), seq=1, t=0.0, source="probe")
                await asker.publish(f"vega/{device}/infer", request, qos=1)
            answers = {}
            async with asyncio.timeout(30):
                async for message in asker.messages:
                    assert isinstance(message.payload, bytes)
                    answers[str(message.topic)] = Prediction.from_json(message.payload)
                    if len(answers) == 2:
                        break
        assert sorted(answers) == ["vega/node-0000/prediction", "vega/node-0003/prediction"]
        assert all(len(p.classes) == 3 for p in answers.values())
        assert monitor.gateways == {GATEWAYS[1]: "online"}
        for process in (shard0, shard1):
            process.send(signal.SIGTERM)
            await process.ended_within(10)
    for process in (shard0, shard1):
        assert process.returncode == 0, process.stderr
        assert "Traceback" not in process.stderr
    for device in IDS:
        with sqlite3.connect(tmp_path / "state" / f"{device}.db") as db:
            rows = db.execute("SELECT seq, outcome FROM events ORDER BY seq").fetchall()
        assert rows == [(s, "learned") for s in range(1, events + 1)], device
