"""Retained messages reach a client only through its own subscriptions (broker/amqtt_fix.py).

amqtt >= 0.11.2 sends a connecting client every retained message matching *any* client's
subscription. The negative cases run on :class:`EmbeddedBroker` and on amqtt's own ``Broker`` with
the same configuration, where they must fail (strict xfail): the proof that they catch the bug. A
strict XPASS there on a new amqtt means upstream fixed it and broker/amqtt_fix.py can go.

No sleeps decide the outcome: amqtt sends the connect-time retained messages before it starts
reading the client's packets, so a marker the client publishes to its own topic after connecting
arrives after anything sent on connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import amqtt
import pytest
from amqtt.broker import Broker

from broker import BrokerStartError, BrokerURL, EmbeddedBroker, free_port
from broker.amqtt_fix import check_amqtt_internals
from broker.embedded import amqtt_config
from tests.support.wait import wait_until

# amqtt 0.11.1 sends no retained messages on connect; from 0.11.2 on it does, through this hook
SENDS_RETAINED_ON_CONNECT = (
    "_publish_retained_messages_for_subscription" in Broker._handle_client_session.__code__.co_names
)
WAIT_S = 5.0
LINGER_S = 0.3  # after the marker: long enough for a stray packet on loopback
OPERATIONS_DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


@contextlib.asynccontextmanager
async def unpatched_amqtt() -> AsyncIterator[BrokerURL]:
    """amqtt's own ``Broker``, configured as :class:`EmbeddedBroker` configures its subclass."""
    port = free_port()
    broker = Broker(amqtt_config("127.0.0.1", port))
    await broker.start()
    try:
        yield BrokerURL("127.0.0.1", port)
    finally:
        await broker.shutdown()


@pytest.fixture(
    params=[
        "embedded",
        pytest.param(
            "unpatched-amqtt",
            marks=pytest.mark.xfail(
                SENDS_RETAINED_ON_CONNECT,
                strict=True,
                raises=AssertionError,
                reason="amqtt's retained-on-connect bug",
            ),
        ),
    ]
)
async def url(request: pytest.FixtureRequest) -> AsyncIterator[BrokerURL]:
    if request.param == "embedded":
        async with EmbeddedBroker(port=0) as b:
            yield b.url
    else:
        async with unpatched_amqtt() as u:
            yield u


def client(url: BrokerURL, identifier: str, *, clean_session: bool = True) -> aiomqtt.Client:
    return aiomqtt.Client(**url.client_kwargs(), identifier=identifier, clean_session=clean_session)


async def retain_status(url: BrokerURL, holder: aiomqtt.Client) -> None:
    """Retain ``vega/a/status`` and wait until ``holder`` (subscribed to it) has it: stored."""
    async with client(url, "publisher") as publisher:
        await publisher.publish("vega/a/status", b"online", qos=1, retain=True)
    async with asyncio.timeout(WAIT_S):
        message = await anext(aiter(holder.messages))
    assert message.topic.value == "vega/a/status"


async def topics_up_to_marker(c: aiomqtt.Client, marker_topic: str) -> list[str]:
    """Publish a marker to ``marker_topic`` (which ``c`` holds) and return the topics ``c``
    receives up to the marker, plus any that arrive within ``LINGER_S`` after it."""
    await c.publish(marker_topic, b"marker", qos=1)
    topics: list[str] = []
    messages = aiter(c.messages)
    async with asyncio.timeout(WAIT_S):
        while marker_topic not in topics:
            topics.append((await anext(messages)).topic.value)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(LINGER_S):
            while True:
                topics.append((await anext(messages)).topic.value)
    return topics


async def test_a_new_client_gets_no_retained_message_of_another_clients_filter(
    url: BrokerURL,
) -> None:
    async with client(url, "a") as a:
        await a.subscribe("vega/a/status", qos=1)
        await retain_status(url, a)
        async with client(url, "b") as b:
            await b.subscribe("vega/b/batch", qos=1)
            topics = await topics_up_to_marker(b, "vega/b/batch")
    assert topics == ["vega/b/batch"]


async def test_a_resumed_session_gets_no_retained_message_of_another_clients_filter(
    url: BrokerURL,
) -> None:
    async with client(url, "b", clean_session=False) as b:
        await b.subscribe("vega/b/batch", qos=1)
    async with client(url, "a") as a:
        await a.subscribe("vega/a/status", qos=1)
        await retain_status(url, a)
        async with client(url, "b", clean_session=False) as b:  # the session keeps vega/b/batch
            topics = await topics_up_to_marker(b, "vega/b/batch")
    assert topics == ["vega/b/batch"]


async def test_a_client_gets_the_retained_message_of_its_own_filter(
    embedded_broker: EmbeddedBroker,
) -> None:
    url = embedded_broker.url
    async with client(url, "a") as a:
        await a.subscribe("vega/a/status", qos=1)
        await retain_status(url, a)
    async with client(url, "c") as c:
        await c.subscribe("vega/b/batch", qos=1)
        await c.subscribe("vega/+/status", qos=1)
        async with asyncio.timeout(WAIT_S):
            message = await anext(aiter(c.messages))
    assert (message.topic.value, message.payload, message.retain) == (
        "vega/a/status",
        b"online",
        True,
    )


def test_the_installed_amqtt_has_the_internals_the_fix_needs() -> None:
    check_amqtt_internals(Broker)


def test_an_amqtt_without_them_is_refused_by_version() -> None:
    class Renamed(Broker):
        _publish_retained_messages_for_subscription = None

    class NewSignature(Broker):
        async def _publish_retained_messages_for_subscription(self, subscription: object) -> None:
            pass

    for broker_class in (Renamed, NewSignature):
        with pytest.raises(BrokerStartError, match=f"amqtt {amqtt.__version__}"):
            check_amqtt_internals(broker_class)


def test_the_upstream_report_script_shows_the_bug_on_the_installed_amqtt() -> None:
    """docs/operations.md's reproduction runs, and leaks exactly when amqtt has the bug."""
    found = re.search(r"```python\n(.*?)```", OPERATIONS_DOC.read_text(encoding="utf-8"), re.S)
    assert found, "no python block in docs/operations.md"
    result = subprocess.run(
        [sys.executable, "-c", found.group(1)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "client-b received vega/b/batch b'marker'"
    assert ("client-b received vega/a/status b'online'" in lines) == SENDS_RETAINED_ON_CONNECT


async def test_the_embedded_broker_closes_every_connection_it_accepted_when_it_stops() -> None:
    """A client that vanished, or one still connecting, kept its server-side socket open after
    amqtt shut down, until the garbage collector found it after the loop had closed."""
    async with EmbeddedBroker() as broker:
        assert broker.url is not None
        silent = [await asyncio.open_connection(broker.url.host, broker.url.port) for _ in range(3)]
        amqtt_broker = broker._broker
        assert amqtt_broker is not None
        await wait_until(lambda: len(amqtt_broker._connections) == 3, 10, what="3 accepted")
        server_side = list(amqtt_broker._connections)
    assert all(writer.is_closing() for writer in server_side)
    for reader, writer in silent:  # the broker hung up on the connections that never spoke
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        await writer.wait_closed()
