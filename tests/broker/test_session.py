"""The one MQTT session helper: backoff, the reconnect loop, grants checked on every SUBSCRIBE,
and every client turning a refused subscription into its own clear error.

Mosquitto's ACL file grants every subscription of an MQTT 3.1.1 client and applies the ACL on
delivery (a refusal shows only as silence: tests/fleet/test_gateway.py covers the monitor's
rights there). The refusals here come from amqtt with a topic plugin that refuses a SUBSCRIBE
outside a list, as EMQX, HiveMQ or Mosquitto's dynamic-security plugin would.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import pytest
from amqtt.contexts import Action
from amqtt.plugins.base import BaseTopicPlugin
from amqtt.session import Session as AmqttSession
from hypothesis import given
from hypothesis import strategies as st

from broker.amqtt_fix import ScopedRetainBroker
from broker.backoff import Backoff, BackoffPolicy
from broker.embedded import amqtt_config
from broker.errors import OutageTooLong, SubscriptionRefused
from broker.reconnect import STABLE_AFTER_S, Reconnect
from broker.session import Session, close, new_client_id, subscribe
from broker.url import BrokerURL, free_port
from dataset_stream import PublishError, Scenario, SourceError, StreamPublisher
from dataset_stream.bridge.link import NextSeqs, TargetLink
from dataset_stream.bridge.mqtt_source import mqtt_records
from dataset_stream.bridge.sources import Format, MqttSource
from dataset_stream.reconnect import ReconnectPolicy
from device.errors import NodeError, NodeGaveUp
from device.fleet.gateway import Gateway
from device.model.bundle import ModelBundle
from device.node.node import Node
from device.node.settings import ConnectSettings, NodeSettings
from device.observe.errors import MonitorError
from device.observe.monitor import FleetMonitor

READABLE = ["vega/+/status", "vega/node-0000/batch"]  # all a client of the ACL broker may read


# -- backoff -------------------------------------------------------------------------------------


@given(
    initial_s=st.floats(0.001, 10.0),
    cap_ratio=st.floats(1.0, 1000.0),
    factor=st.floats(1.0, 4.0),
    attempts=st.integers(1, 80),
)
def test_every_delay_is_jittered_under_its_ceiling(
    initial_s: float, cap_ratio: float, factor: float, attempts: int
) -> None:
    policy = BackoffPolicy(initial_s, initial_s * cap_ratio, factor)
    backoff = Backoff.of(policy, rng=random.Random(0))
    for n in range(attempts):
        ceiling = min(policy.cap_s, initial_s * factor**n)
        assert 0.5 * ceiling <= backoff.next_delay() <= ceiling
    backoff.reset()
    assert backoff.next_delay() <= initial_s


def test_a_slowly_growing_backoff_still_reaches_its_cap() -> None:
    # factor 1.0625 needs 66 attempts to grow from 1 s to 53 s: an exponent frozen at a fixed
    # count (it was 64) left the ceiling at 48.4 s forever
    assert BackoffPolicy(1.0, 53.0, 1.0625).ceiling_s(75) == 53.0
    assert BackoffPolicy(1.0, 53.0, 1.0625).ceiling_s(10**9) == 53.0


def test_a_loop_that_retries_forever_stays_at_the_cap() -> None:
    backoff = Backoff(0.2, 5.0)  # a float power would overflow after ~1,000 attempts
    delays = [backoff.next_delay() for _ in range(5000)]
    assert all(2.5 <= d <= 5.0 for d in delays[100:])
    assert backoff.policy == BackoffPolicy(0.2, 5.0)


@pytest.mark.parametrize(
    "bad",
    [
        {"initial_s": 0},
        {"initial_s": 2, "cap_s": 1},
        {"cap_s": float("inf")},
        {"initial_s": float("nan")},
        {"factor": 0.5},
    ],
)
def test_a_bad_policy_is_refused_by_name(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"initial_s|finite|factor"):
        BackoffPolicy(**bad)


def test_client_ids_are_short_and_new_each_time() -> None:
    ids = {new_client_id("monitor") for _ in range(100)}
    assert len(ids) == 100 and all(len(i) == 23 for i in ids)


# -- the reconnect loop --------------------------------------------------------------------------


def reconnect(max_outage_s: float | None) -> Reconnect:
    return Reconnect(
        Backoff(0.01, 0.05), broker="test", who="test", client_id="c", max_outage_s=max_outage_s
    )


async def test_an_outage_past_its_limit_ends_with_the_last_failure() -> None:
    loop = reconnect(0.3)
    loop.connected()
    failures: list[OSError] = []

    async def connect() -> str:
        failures.append(OSError(f"refused #{len(failures)}"))
        raise failures[-1]

    loop.connected_at -= STABLE_AFTER_S  # a connection that had lasted
    with pytest.raises(OutageTooLong, match=r"no broker at test .*max outage 0.3 s") as info:
        await loop.again(connect, aiomqtt.MqttError("lost"))
    assert info.value.__cause__ is failures[-1] and len(failures) >= 3
    assert info.value.waited_s >= 0.3 and loop.reconnects == 0


async def test_a_connection_comes_back_and_is_counted() -> None:
    loop = reconnect(None)
    loop.connected()
    loop.connected_at -= STABLE_AFTER_S
    attempts: list[int] = []

    async def connect() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise aiomqtt.MqttError("still away")
        return "client"

    assert await loop.again(connect, aiomqtt.MqttError("lost")) == "client"
    assert (loop.reconnects, len(attempts)) == (1, 3) and loop.outage_s > 0


async def test_a_connection_that_ends_at_once_does_not_end_the_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = reconnect(None)
    loop.connected()

    async def connect() -> str:
        return "client"

    await loop.again(connect, aiomqtt.MqttError("lost"))  # the first loss starts the outage
    assert "ended" not in caplog.text
    await loop.again(connect, aiomqtt.MqttError("taken over"))  # 0 s after it was made
    assert "is another client using the client id 'c'" in caplog.text
    assert loop.backoff.next_delay() > 0.01  # not reset: the backoff went on growing


async def test_a_refusal_is_not_retried() -> None:
    async def connect() -> str:
        raise SubscriptionRefused("test", ["a/b"])

    loop = reconnect(None)
    loop.connected()
    with pytest.raises(SubscriptionRefused):
        await loop.again(connect, aiomqtt.MqttError("lost"))


# -- grants, on a broker that refuses -----------------------------------------------------------


class ReadOnlyTopics(BaseTopicPlugin):
    """amqtt topic plugin: a SUBSCRIBE is granted only for the filters listed in ``readable``."""

    @dataclass
    class Config:
        readable: list[str] = field(default_factory=list)

    async def topic_filtering(
        self,
        *,
        session: AmqttSession | None = None,
        topic: str | None = None,
        action: Action | None = None,
    ) -> bool:
        return action != Action.SUBSCRIBE or topic in self._get_config_option("readable", [])


@pytest.fixture
async def acl_broker() -> AsyncIterator[BrokerURL]:
    """An amqtt broker that refuses every subscription but :data:`READABLE`."""
    port = free_port()
    config = amqtt_config("127.0.0.1", port)
    config["plugins"][f"{__name__}.ReadOnlyTopics"] = {"readable": READABLE}
    broker = ScopedRetainBroker(config)
    await broker.start()
    try:
        yield BrokerURL("127.0.0.1", port)
    finally:
        await broker.shutdown()


@pytest.mark.parametrize("chunk", [1, 500])
async def test_every_refused_filter_is_named(acl_broker: BrokerURL, chunk: int) -> None:
    wanted = [("vega/+/status", 1), ("vega/+/telemetry", 1), ("vega/node-0000/batch", 1)]
    wanted.append(("vega/+/error", 1))
    async with aiomqtt.Client(**acl_broker.client_kwargs()) as client:
        with pytest.raises(SubscriptionRefused, match=r"127.0.0.1:\d+ refused 2") as info:
            await subscribe(client, wanted, within_s=5.0, broker=acl_broker, chunk=chunk)
        await subscribe(client, wanted[:1], within_s=5.0, broker=acl_broker, chunk=chunk)
    assert info.value.refused == ("vega/+/telemetry", "vega/+/error")


async def test_a_refused_session_is_closed(acl_broker: BrokerURL) -> None:
    session = Session(acl_broker, "refused", timeout_s=5.0)
    with pytest.raises(SubscriptionRefused):
        await session.open([("vega/+/telemetry", 1)])
    client = await session.open([(READABLE[0], 1)])  # the same id connects again at once
    await close(client, within_s=5.0)
    await close(client, within_s=5.0)  # closing twice is harmless
    await session.end()


async def test_every_client_says_a_refused_subscription(
    acl_broker: BrokerURL, digits_nic: Scenario, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    url = acl_broker
    with pytest.raises(MonitorError, match=r"refused .* vega/\+/telemetry"):
        async with FleetMonitor(url):
            pass
    with pytest.raises(PublishError, match=r"refused .* vega/node-0000/telemetry"):
        async with StreamPublisher(url, digits_nic, ["node-0000"], speed=None, events=1):
            pass
    bridge = TargetLink(
        url, NextSeqs(0.1), prefix="vega", devices=["node-0001"], reconnect=ReconnectPolicy()
    )
    with pytest.raises(PublishError, match=r"refused .* vega/node-0001/status"):
        async with bridge:
            pass
    records = mqtt_records(MqttSource(url, "sensors/+/x"), Format.auto, policy=ReconnectPolicy())
    with pytest.raises(SourceError, match=r"MQTT source: .*refused .* sensors/\+/x"):
        await anext(records)
    # the gateway subscribes for its devices: a refusal stops it, and its nodes hear why
    async with Gateway(url, "gw-0", "vega", ["node-0000", "node-0001"]) as gateway:
        async with asyncio.timeout(10):
            await gateway.failed.wait()
        with pytest.raises(NodeError, match=r"SubscriptionRefused: .*refused 7 .*node-0000/eval"):
            await gateway.attach("node-0000")
    assert "the connection loop failed" in caplog.text


async def test_a_node_whose_subscription_is_refused_gives_up_at_once(
    acl_broker: BrokerURL, default_bundle: ModelBundle, tmp_path: Path
) -> None:
    """A node the ACL does not let read its batches would be deaf forever: it gives up."""
    settings = NodeSettings("node-0001", tmp_path, connect=ConnectSettings(give_up_s=600.0))
    async with Node(settings, default_bundle, acl_broker) as node:
        async with asyncio.timeout(10):
            await node.stopped.wait()
    assert isinstance(node.gave_up, NodeGaveUp) and not node.connected.is_set()
    assert "refused 4" in str(node.gave_up) and "vega/node-0001/batch" in str(node.gave_up)
