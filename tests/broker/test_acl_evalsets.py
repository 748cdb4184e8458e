"""The shared eval sets in the generated ACL, enforced by a real Mosquitto: the stream writes
``vega/evalsets/+/set``, every device (and gateway) reads it, no device writes it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt

from broker import BrokerURL, Mosquitto, MosquittoConfig, acl_text
from dataset_stream.protocol import EvalRef, evalset_filter
from tests.support.mosquitto import require_mosquitto

DIGEST = "5e" * 32
SET = f"vega/evalsets/{DIGEST}/set"


def stanza(text: str, user: str) -> set[str]:
    block = text.split(f"user {user}\n", 1)[1].split("\n\n", 1)[0]
    return set(block.splitlines())


def test_the_acl_lets_the_stream_write_shared_sets_and_devices_read_them() -> None:
    text = acl_text(
        ["node-0000", "node-0001"], "vega", service_users=["stream-2", "gw-node-0000-2"]
    )
    rule = evalset_filter("vega")
    for stream in ("stream", "stream-2"):
        assert f"topic write {rule}" in stanza(text, stream)
    for reader in ("node-0000", "node-0001", "gw-node-0000-2"):
        assert f"topic read {rule}" in stanza(text, reader)
        assert f"topic write {rule}" not in stanza(text, reader)
    for service in ("monitor", "operator"):
        assert not [r for r in stanza(text, service) if "evalsets" in r]


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


async def test_mosquitto_carries_a_shared_set_from_the_stream_to_every_device(
    tmp_path: Path,
) -> None:
    require_mosquitto()
    passwords = tmp_path / "users.txt"
    passwords.write_text("node-0000:p0\nnode-0001:p1\nstream:ps\n")
    config = MosquittoConfig(
        data_dir=tmp_path / "mq", password_file=passwords, acl_devices=("node-0000", "node-0001")
    )
    ref = EvalRef(DIGEST, 3, "t").to_json()
    async with (
        Mosquitto(config) as m,
        client(m.url, "node-0000", "p0") as node0,
    ):
        await node0.subscribe("vega/node-0000/eval", qos=1)
        await node0.subscribe(SET, qos=1)
        async with client(m.url, "node-0001", "p1") as node1:  # a device writes no shared set
            await node1.publish(SET, b"bad", qos=1, retain=True)
            await node1.publish("vega/node-0000/eval", ref, qos=1, retain=True)
        assert await received(node0, 1.0) == []
        async with client(m.url, "stream", "ps") as stream:
            await stream.publish(SET, b"set", qos=1, retain=True)
            await stream.publish("vega/node-0000/eval", ref, qos=1, retain=True)
        got = await received(node0, 1.0)
    assert sorted(got) == [
        ("vega/evalsets/" + DIGEST + "/set", b"set"),
        ("vega/node-0000/eval", ref),
    ]
