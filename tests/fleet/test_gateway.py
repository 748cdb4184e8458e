"""Nodes behind one shared connection (``device.fleet.gateway``), on both brokers, and a
gateway's status read by the monitor under the project's ACL.

The kill and outage cases run the gateway too: ``test_fleet.py`` SIGKILLs a worker of a
``--connection shared`` fleet, ``test_fault_outage.py`` kills the broker under a gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from broker import BrokerURL, Mosquitto, MosquittoConfig, password_file_text
from broker.backoff import Backoff
from broker.session import ack
from dataset_stream import Scenario, StreamPublisher
from dataset_stream.protocol import (
    ForeignMessage,
    GatewayStatus,
    ProtocolError,
    Status,
    gateway_topic,
    read_gateway_status,
    topic,
)
from device.errors import NodeError
from device.fleet.fleet import Fleet
from device.fleet.gateway import Gateway
from device.learning.nn import SGDConfig
from device.model.bundle import ModelBundle
from device.node.settings import NodeSettings
from device.observe.monitor import FleetMonitor
from tests.support.mosquitto import require_mosquitto
from tests.support.relay import Relay
from tests.support.times import T0
from tests.support.wait import wait_until

IDS = ["node-0000", "node-0001", "node-0002"]


def settings(device: str, state_dir: Path) -> NodeSettings:
    return NodeSettings(device, state_dir, sgd=SGDConfig(learning_rate=0.05))


async def test_nodes_behind_a_gateway_learn_every_batch_once_and_go_offline_with_it(
    any_broker: Any, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    url: BrokerURL = any_broker.url
    offline: list[str] = []

    def seen(device: str, message: object, received: float) -> None:
        if isinstance(message, Status) and not message.online:
            offline.append(device)

    async with FleetMonitor(url, on_message=seen) as monitor:
        async with (
            Gateway(url, "gw-test", "vega", IDS) as gateway,
            Fleet(IDS, lambda d: settings(d, tmp_path), default_bundle, url, gateway=gateway),
            StreamPublisher(url, digits_nic, IDS, speed=None, events=6, t0=T0) as stream,
        ):
            stats = await stream.run()
            assert gateway.connections == 1
        async with asyncio.timeout(10):
            while monitor.gateways.get("gw-test") != "offline":
                monitor.activity.clear()
                await monitor.activity.wait()
    assert (stats.acked, stats.rejected, stats.lost) == (18, 0, 0)
    for device in IDS:
        with sqlite3.connect(tmp_path / f"{device}.db") as db:
            rows = db.execute("SELECT seq, outcome FROM events ORDER BY seq").fetchall()
        assert rows == [(s, "learned") for s in range(1, 7)], device
        assert monitor.devices[device].events == 6
    # each node said so itself on the clean stop; the gateway's offline found none still online
    assert sorted(offline) == IDS
    assert monitor.invalid == 0


def status(gateway: str, **fields: object) -> bytes:
    return json.dumps({"gateway": gateway, "state": "offline", "devices": IDS, **fields}).encode()


def test_a_gateway_status_reads_back() -> None:
    where = gateway_topic("vega", "gw-0")
    assert where == "vega/gateway/gw-0/status"
    read = read_gateway_status("vega", where, status("gw-0"))
    assert read == GatewayStatus("gw-0", "offline", tuple(IDS))
    assert not read.online and read.to_json() == status("gw-0").replace(b" ", b"")
    extra = read_gateway_status("vega", where, status("gw-0", site="lab"))
    assert extra.extra == {"site": "lab"} and b'"site":"lab"' in extra.to_json()


@pytest.mark.parametrize(
    ("where", "payload", "words"),
    [
        ("vega/gateway/gw-0/status", b"{", "not JSON"),
        ("vega/gateway/gw-0/status", b"[]", "JSON object"),
        ("vega/gateway/gw-0/status", status("gw-0", state="asleep"), "field state: 'asleep'"),
        ("vega/gateway/gw-0/status", status("gw-0", devices=["a b"]), "field devices/0: 'a b'"),
        ("vega/gateway/gw-0/status", status("gw-0", devices="node-0000"), "field devices: "),
        ("vega/gateway/gw-0/status", b'{"state": "online", "devices": []}', "'gateway' is a requ"),
    ],
)
def test_a_bad_gateway_status_is_refused_by_name(where: str, payload: bytes, words: str) -> None:
    with pytest.raises(ProtocolError, match=words):
        read_gateway_status("vega", where, payload)


@pytest.mark.parametrize(
    ("where", "payload", "words"),
    [
        ("vega/gateway/gw-0/telemetry", status("gw-0"), "not a gateway status"),
        ("vega/node-0000/status", status("gw-0"), "not a gateway status"),
        ("vega/gateway/gw-0/status", status("gw-1"), "'gw-1' on the topic of gw-0"),
    ],
)
def test_a_gateway_status_elsewhere_is_foreign(where: str, payload: bytes, words: str) -> None:
    with pytest.raises(ForeignMessage, match=words):
        read_gateway_status("vega", where, payload)


async def test_a_monitor_ignores_a_bad_gateway_status(any_broker: Any) -> None:
    url: BrokerURL = any_broker.url
    async with FleetMonitor(url) as monitor:
        async with aiomqtt.Client(**url.client_kwargs()) as client:
            await client.publish(gateway_topic("vega", "gw-0"), b"not json", qos=1)
        async with asyncio.timeout(10):
            await monitor.wait_handled(1)
    assert monitor.invalid == 1 and monitor.gateways == {}


async def test_a_gateway_whose_loop_dies_says_so_and_its_nodes_are_not_left_waiting(
    tmp_path: Path,
) -> None:
    # the CA file vanished after the fleet was configured: not a network failure to retry
    url = BrokerURL(host="127.0.0.1", port=1, tls=True, ca_file=tmp_path / "gone.pem")
    async with Gateway(url, "gw-test", "vega", IDS) as gateway:
        async with asyncio.timeout(5):
            await gateway.failed.wait()
        assert gateway.failure is not None and "gone.pem" in gateway.failure
        with pytest.raises(NodeError, match=r"gw-test is not running: .*gone\.pem"):
            await gateway.attach(IDS[0])


async def next_batch(gateway: Gateway, device: str, url: BrokerURL) -> aiomqtt.Message:
    """A batch published now for ``device`` as the gateway's current connection hands it over
    (acknowledged): proof that the gateway is subscribed for it."""
    client, inbox = await gateway.attach(device)
    async with aiomqtt.Client(**url.client_kwargs()) as producer:
        await producer.publish(topic("vega", device, "batch"), b"probe", qos=1)
    message = await anext(aiter(inbox))
    ack(client, message)
    return message


async def test_a_gateway_that_gets_no_suback_in_time_connects_again_instead_of_failing(
    mosquitto: Mosquitto,
) -> None:
    # the broker takes the first connection's CONNECT and then hears nothing more from it
    async with Relay(mosquitto.url, deaf=1) as relay:
        gateway = Gateway(
            relay.url, "gw-test", "vega", IDS, backoff=Backoff(0.05, 0.2), timeout_s=1.0
        )
        async with gateway, asyncio.timeout(20):
            message = await next_batch(gateway, IDS[0], mosquitto.url)
            assert message.payload == b"probe"
            assert not gateway.failed.is_set() and gateway.failure is None
        assert relay.connections >= 2 and gateway.connections == 1


@pytest.mark.parametrize("persistence", [True, False], ids=["persistent", "empty"])
async def test_a_gateway_subscribes_again_on_a_broker_that_came_back(
    tmp_path: Path, persistence: bool
) -> None:
    """Killed, the broker comes back with the gateway's session (saved) or with nothing at all
    (restarted without persistence): either way the gateway's devices hear their batches."""
    require_mosquitto()
    config = MosquittoConfig(
        data_dir=tmp_path / "mosquitto", persistence=persistence, autosave_interval_s=1
    )
    async with Mosquitto(config) as mosquitto:
        gateway = Gateway(mosquitto.url, "gw-test", "vega", IDS, backoff=Backoff(0.05, 0.2))
        async with gateway, asyncio.timeout(30):
            assert (await next_batch(gateway, IDS[0], mosquitto.url)).payload == b"probe"
            await mosquitto.kill()
            await mosquitto.start()
            # the gateway offers no event for a new connection; its nodes just attach to it
            await wait_until(lambda: gateway.connections >= 2, 20, what="a second connection")
            for device in IDS:
                assert (await next_batch(gateway, device, mosquitto.url)).payload == b"probe"
            assert not gateway.failed.is_set()


# -- under the ACL ---------------------------------------------------------------------------------

GATEWAY = "gw-node-0000-2"  # a fleet gateway's name: the monitor trusts it for node-0000, node-0001
ACL_IDS = ["node-0000", "node-0001"]
USERS = {"monitor": "pm", "stream": "ps", GATEWAY: "pg", **{d: f"p-{d}" for d in ACL_IDS}}


def as_user(url: BrokerURL, user: str) -> BrokerURL:
    return url.with_credentials(user, USERS[user])


def gateway_rules(prefix: str, gateway: str, devices: list[str]) -> str:
    """What docs/fleet.md asks an operator to add for a gateway's user: its devices' inputs to
    read, their reports and its own status to write."""
    lines = [f"user {gateway}", f"topic write {prefix}/gateway/{gateway}/status"]
    for device in devices:
        lines += [f"topic read {topic(prefix, device, k)}" for k in ("batch", "eval", "infer")]
        reports = ("telemetry", "status", "error", "prediction")
        lines += [f"topic write {topic(prefix, device, k)}" for k in reports]
    return "\n".join(lines) + "\n"


async def until_reloaded(url: BrokerURL) -> None:
    """Until the gateway's user reads its devices' batches: Mosquitto reloads its ACL some time
    after a SIGHUP (it grants every subscription and applies the ACL on delivery, so a probe
    message is the only sign)."""
    where = topic("vega", ACL_IDS[0], "batch")
    async with (
        aiomqtt.Client(**as_user(url, GATEWAY).client_kwargs()) as gateway,
        aiomqtt.Client(**as_user(url, "stream").client_kwargs()) as stream,
        asyncio.timeout(10),
    ):
        await gateway.subscribe(where, qos=1)
        while True:
            await stream.publish(where, b"probe", qos=1)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):  # delivered at once, or dropped by the old ACL
                    await anext(aiter(gateway.messages))
                    return


@pytest.fixture
async def acl_broker(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    """Mosquitto with passwords and the project's ACL for two devices, plus a gateway's rules."""
    require_mosquitto()
    users = tmp_path / "users.txt"
    users.write_text(password_file_text(USERS))
    config = MosquittoConfig(
        data_dir=tmp_path / "mq", password_file=users, acl_devices=tuple(ACL_IDS)
    )
    async with Mosquitto(config) as broker:
        acl = config.data_dir / "acl"
        acl.write_text(acl.read_text() + "\n" + gateway_rules("vega", GATEWAY, ACL_IDS))
        os.kill(broker.pid, signal.SIGHUP)
        await until_reloaded(broker.url)
        yield broker


async def until(monitor: FleetMonitor, done: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while True:
            monitor.activity.clear()
            if done():
                return
            await monitor.activity.wait()


async def test_under_the_acl_the_monitor_marks_a_gateways_devices_offline(
    acl_broker: Mosquitto,
) -> None:
    url = acl_broker.url
    offline: list[str] = []

    def seen(device: str, message: object, received: float) -> None:
        if isinstance(message, Status) and not message.online:
            offline.append(device)

    def online(device: str) -> bool:
        record = monitor.devices.get(device)
        return record is not None and record.status is not None and record.status.online

    async with FleetMonitor(as_user(url, "monitor"), on_message=seen) as monitor:
        for device in ACL_IDS:  # each node announces itself, under its own user
            async with aiomqtt.Client(**as_user(url, device).client_kwargs()) as node:
                status = Status("idle", device=device).to_json()
                await node.publish(topic("vega", device, "status"), status, qos=1, retain=True)
        async with Gateway(as_user(url, GATEWAY), GATEWAY, "vega", ACL_IDS):
            await until(monitor, lambda: monitor.gateways.get(GATEWAY) == "online")
            await until(monitor, lambda: all(map(online, ACL_IDS)))
        # the gateway's clean stop says offline, as its last will would after a crash
        await until(monitor, lambda: monitor.gateways.get(GATEWAY) == "offline")
    assert sorted(offline) == ACL_IDS and not any(map(online, ACL_IDS))
    assert (monitor.invalid, monitor.foreign, monitor.reconnects) == (0, 0, 0)
