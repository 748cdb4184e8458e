"""No part dies unobserved: a node loop that fails is logged at once, restarted, and reported.

The failure used is a real one from the field: a CA file that cannot be read (the TLS context
is built when the client is made, outside any MQTT error handling).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from broker import BrokerURL
from broker.url import free_port
from dataset_stream.protocol import Status
from device.model.bundle import ModelBundle
from device.node.node import Node
from device.node.settings import NodeSettings
from tests.support.wait import wait_until

DEVICE = "node-0011"


async def test_a_failing_loop_is_logged_at_once_restarted_and_reported(
    embedded_broker: Any,
    default_bundle: ModelBundle,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    missing_ca = tmp_path / "no-such-ca.pem"
    bad = BrokerURL("127.0.0.1", free_port("127.0.0.1"), tls=True, ca_file=missing_ca)
    caplog.set_level(logging.ERROR, logger="device.node.node")
    async with Node(NodeSettings(DEVICE, tmp_path), default_bundle, bad) as node:
        # restarted after the first failure (a counter of the node's: it offers no event)
        await wait_until(lambda: node.failures >= 2, timeout_s=15, what="a second loop failure")
        assert node._task is not None and not node._task.done()
        assert "node loop failed" in caplog.text and "no-such-ca.pem" in caplog.text
        assert not node.connected.is_set()
        # the operator fixes the broker settings: the supervisor's next restart connects,
        # and the first thing the node says is why it was down
        node.broker = embedded_broker.url
        await asyncio.wait_for(node.connected.wait(), 15)
        async with aiomqtt.Client(**embedded_broker.url.client_kwargs()) as peer:
            await peer.subscribe(f"vega/{DEVICE}/status", qos=1)
            async with asyncio.timeout(10):
                message = await anext(aiter(peer.messages))
    assert isinstance(message.payload, bytes)
    status = Status.from_json(message.payload)
    assert status.state == "error" and status.reason is not None
    assert "no-such-ca.pem" in status.reason
