"""The downlink in the generated ACL, enforced by a real Mosquitto: a device reads its own
desired state and the pushed heads and writes its own reported state; only the operator role
writes desired states, heads and rollouts; the monitor reads them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt
import pytest

from broker import BrokerURL, Mosquitto, MosquittoConfig, acl_text, service_role
from tests.support.mosquitto import require_mosquitto


def stanza(text: str, user: str) -> set[str]:
    block = text.split(f"user {user}\n", 1)[1].split("\n\n", 1)[0]
    return set(block.splitlines())


def test_the_acl_gives_the_downlink_to_the_operator_only() -> None:
    text = acl_text(["node-0000", "node-0001"], "vega", service_users=["operator-ci"])
    device = stanza(text, "node-0000")
    assert {
        "topic read vega/node-0000/desired",
        "topic read vega/heads/+/weights",
        "topic write vega/node-0000/reported",
    } <= device
    assert "topic write vega/node-0000/desired" not in device
    operator = stanza(text, "operator")
    assert {
        "topic write vega/+/desired",
        "topic write vega/heads/+/weights",
        "topic write vega/rollout/+/state",
        "topic read vega/+/reported",
        "topic read vega/+/telemetry",
        "topic read vega/+/status",
        "topic read vega/+/error",
        "topic read vega/+/desired",
        "topic read vega/rollout/+/state",
    } == operator
    assert {r.replace("operator-ci", "operator") for r in stanza(text, "operator-ci")} == operator
    monitor = stanza(text, "monitor")
    assert {
        "topic read vega/+/desired",
        "topic read vega/+/reported",
        "topic read vega/rollout/+/state",
    } <= monitor
    assert not [r for r in monitor | stanza(text, "stream") if "desired" in r and "write" in r]
    assert service_role("operator") == service_role("operator-ci") == "operator"
    with pytest.raises(Exception, match="reserved"):
        acl_text(["operator-7"])


def client(url: BrokerURL, user: str, password: str) -> aiomqtt.Client:
    return aiomqtt.Client(**url.with_credentials(user, password).client_kwargs(), identifier=user)


async def received(c: aiomqtt.Client, within_s: float) -> list[tuple[str, bytes]]:
    """The messages ``c`` gets within ``within_s`` (a refused publish delivers none)."""
    out: list[tuple[str, bytes]] = []
    try:
        async with asyncio.timeout(within_s):
            async for message in c.messages:
                assert isinstance(message.payload, bytes)
                out.append((str(message.topic), message.payload))
    except TimeoutError:
        pass
    return out


async def test_mosquitto_lets_the_operator_write_desired_and_no_device(tmp_path: Path) -> None:
    require_mosquitto()
    passwords = tmp_path / "users.txt"
    passwords.write_text("node-0000:p0\nnode-0001:p1\noperator:po\nmonitor:pm\n")
    config = MosquittoConfig(
        data_dir=tmp_path / "mq", password_file=passwords, acl_devices=("node-0000", "node-0001")
    )
    async with (
        Mosquitto(config) as m,
        client(m.url, "monitor", "pm") as monitor,
        client(m.url, "node-0000", "p0") as node0,
    ):
        await monitor.subscribe("vega/+/desired", qos=1)
        await monitor.subscribe("vega/+/reported", qos=1)
        await node0.subscribe("vega/node-0000/desired", qos=1)
        await node0.subscribe("vega/heads/+/weights", qos=1)
        async with client(m.url, "node-0001", "p1") as node1:  # a device writes no desired
            await node1.publish("vega/node-0000/desired", b"from node-0001", qos=1)
            await node1.publish("vega/node-0001/desired", b"its own", qos=1)
            await node1.publish("vega/heads/evil/weights", b"x", qos=1)
            await node1.publish("vega/node-0001/reported", b"{}", qos=1)
        assert await received(node0, 1.0) == []
        async with client(m.url, "operator", "po") as operator:
            await operator.publish("vega/node-0000/desired", b"{}", qos=1)
            await operator.publish("vega/heads/v2/weights", b"w", qos=1)
        got = await received(node0, 1.0)
        assert sorted(got) == [("vega/heads/v2/weights", b"w"), ("vega/node-0000/desired", b"{}")]
        seen = sorted(await received(monitor, 0.5))
        assert seen == [
            ("vega/node-0000/desired", b"{}"),
            ("vega/node-0001/reported", b"{}"),
        ]
