"""Both brokers, through real aiomqtt clients on random loopback ports."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt
import pytest

from broker import (
    BrokerError,
    BrokerStartError,
    BrokerURL,
    Mosquitto,
    MosquittoConfig,
    MosquittoNotFound,
    acl_text,
    find_mosquitto,
    password_file_text,
    service_role,
)
from broker.mosquitto import render_config
from tests.support.mosquitto import require_mosquitto


def client(url: BrokerURL, ident: str | None = None, **kw: object) -> aiomqtt.Client:
    return aiomqtt.Client(**url.client_kwargs(), identifier=ident, **kw)  # type: ignore[arg-type]


async def next_message(c: aiomqtt.Client) -> aiomqtt.Message:
    async with asyncio.timeout(5):
        async for message in c.messages:
            return message
    raise AssertionError("message stream ended")


async def test_round_trip(any_broker: object) -> None:
    url: BrokerURL = any_broker.url  # type: ignore[attr-defined]
    async with client(url) as sub:
        await sub.subscribe("vega/node-0000/telemetry", qos=1)
        async with client(url) as pub:
            await pub.publish("vega/node-0000/telemetry", b'{"seq": 1}', qos=1)
        message = await next_message(sub)
    assert message.payload == b'{"seq": 1}'
    assert message.qos == 1


async def test_qos1_waits_for_a_persistent_session(any_broker: object) -> None:
    url: BrokerURL = any_broker.url  # type: ignore[attr-defined]
    async with client(url, "node-0001", clean_session=False) as sub:
        await sub.subscribe("vega/node-0001/batch", qos=1)
    async with client(url) as pub:
        for i in range(3):
            await pub.publish("vega/node-0001/batch", f"b{i}".encode(), qos=1)
    async with client(url, "node-0001", clean_session=False) as sub:
        got = [(await next_message(sub)).payload for _ in range(3)]
    assert got == [b"b0", b"b1", b"b2"]


async def test_mosquitto_keeps_queued_messages_across_a_restart(mosquitto: Mosquitto) -> None:
    url = mosquitto.url
    async with client(url, "node-0002", clean_session=False) as sub:
        await sub.subscribe("vega/node-0002/batch", qos=1)
    async with client(url) as pub:
        await pub.publish("vega/node-0002/batch", b"kept", qos=1)
    await mosquitto.restart()
    assert mosquitto.url == url
    async with client(url, "node-0002", clean_session=False) as sub:
        message = await next_message(sub)
    assert message.payload == b"kept"


@pytest.fixture
async def secured(tmp_path: Path) -> Mosquitto:  # type: ignore[misc]
    require_mosquitto()
    users = {"node-0000": "p0", "node-0001": "p1", "stream": "ps", "monitor": "pm"}
    passwords = tmp_path / "users.txt"
    passwords.write_text(password_file_text(users))
    config = MosquittoConfig(
        data_dir=tmp_path / "mq",
        password_file=passwords,
        acl_devices=("node-0000", "node-0001"),
    )
    async with Mosquitto(config) as m:
        yield m


async def test_acl_device_cannot_read_another_devices_batch(secured: Mosquitto) -> None:
    base = secured.url
    as_node0 = base.with_credentials("node-0000", "p0")
    as_stream = base.with_credentials("stream", "ps")
    async with client(as_node0) as spy:
        await spy.subscribe("vega/node-0001/batch", qos=1)  # denied: nothing is delivered
        await spy.subscribe("vega/node-0000/batch", qos=1)
        async with client(as_stream) as stream:
            await stream.publish("vega/node-0001/batch", b"secret", qos=1)
            await stream.publish("vega/node-0000/batch", b"mine", qos=1)
        message = await next_message(spy)
    assert (str(message.topic), message.payload) == ("vega/node-0000/batch", b"mine")


async def test_acl_device_cannot_publish_another_devices_telemetry(secured: Mosquitto) -> None:
    base = secured.url
    async with client(base.with_credentials("monitor", "pm")) as monitor:
        await monitor.subscribe("vega/+/telemetry", qos=1)
        async with client(base.with_credentials("node-0000", "p0")) as node0:
            await node0.publish("vega/node-0001/telemetry", b"forged", qos=1)
            await node0.publish("vega/node-0000/telemetry", b"real", qos=1)
        message = await next_message(monitor)
    assert (str(message.topic), message.payload) == ("vega/node-0000/telemetry", b"real")


async def test_acl_stream_reads_the_answers_it_paces_on(secured: Mosquitto) -> None:
    base = secured.url
    async with client(base.with_credentials("stream", "ps")) as stream:
        await stream.subscribe("vega/+/telemetry", qos=1)
        async with client(base.with_credentials("node-0001", "p1")) as node1:
            await node1.publish("vega/node-0001/telemetry", b"{}", qos=1)
        message = await next_message(stream)
    assert str(message.topic) == "vega/node-0001/telemetry"


async def test_wrong_password_is_refused(secured: Mosquitto) -> None:
    with pytest.raises(aiomqtt.MqttError):
        async with client(secured.url.with_credentials("node-0000", "wrong")):
            pass
    with pytest.raises(aiomqtt.MqttError):
        async with client(secured.url):  # anonymous
            pass


async def test_missing_binary_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VEGA_EMU_MOSQUITTO", str(tmp_path / "no-such-mosquitto"))
    with pytest.raises(MosquittoNotFound, match="install the Debian package mosquitto"):
        find_mosquitto()
    with pytest.raises(MosquittoNotFound):
        async with Mosquitto(MosquittoConfig(data_dir=tmp_path)):
            pass


async def test_port_in_use_is_reported(mosquitto: Mosquitto, tmp_path: Path) -> None:
    clash = MosquittoConfig(data_dir=tmp_path / "other", port=mosquitto.port)
    with pytest.raises(BrokerStartError, match="mosquitto"):
        async with Mosquitto(clash):
            pass


def test_a_password_file_binds_the_client_id_to_the_user(tmp_path: Path) -> None:
    passwords = tmp_path / "users.txt"
    passwords.write_text("node-0000:p0\n")
    bound = render_config(MosquittoConfig(data_dir=tmp_path, password_file=passwords), 1884)
    assert "use_username_as_clientid true" in bound.splitlines()
    assert "allow_anonymous false" in bound.splitlines()
    open_broker = render_config(MosquittoConfig(data_dir=tmp_path), 1884)
    assert "use_username_as_clientid" not in open_broker
    with pytest.raises(ValueError, match="allow_anonymous"):
        MosquittoConfig(
            data_dir=tmp_path, password_file=passwords, bind_client_id=True, allow_anonymous=True
        )
    # anonymous clients have no user name to bind: explicit anonymous access leaves ids free
    mixed = MosquittoConfig(data_dir=tmp_path, password_file=passwords, allow_anonymous=True)
    assert "use_username_as_clientid" not in render_config(mixed, 1884)


def test_acl_gives_service_users_their_role() -> None:
    text = acl_text(["node-0000"], service_users=["stream-2", "monitor-lab", "stream"])
    rules = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    stanzas = {block.split("\n", 1)[0]: block for block in rules.strip().split("\n\n")}
    assert stanzas["user stream-2"].replace("stream-2", "stream") == stanzas["user stream"]
    assert stanzas["user monitor-lab"].replace("monitor-lab", "monitor") == stanzas["user monitor"]
    assert text.count("user stream\n") == 1
    assert service_role("stream-2") == "stream" and service_role("monitor") == "monitor"
    for bad in ("streamer", "stream-", "node-0000", "stream-a b"):
        with pytest.raises(BrokerError, match="service user"):
            service_role(bad)
    with pytest.raises(BrokerError, match="reserved"):
        acl_text(["stream-7"])


async def test_password_file_service_users_get_the_acl(tmp_path: Path) -> None:
    require_mosquitto()
    passwords = tmp_path / "users.txt"
    passwords.write_text("node-0000:p0\nmonitor-2:pm2\nstranger:px\n")
    config = MosquittoConfig(
        data_dir=tmp_path / "mq", password_file=passwords, acl_devices=("node-0000",)
    )
    async with Mosquitto(config) as m:
        acl = (tmp_path / "mq" / "acl").read_text()
        assert "user monitor-2\n" in acl and "stranger" not in acl
        modes = {
            p.name: p.stat().st_mode & 0o777
            for p in [tmp_path / "mq", *(tmp_path / "mq").iterdir()]
        }
        assert modes["mq"] == 0o700 and modes["passwords"] == modes["acl"] == 0o600
        async with (
            client(m.url.with_credentials("monitor-2", "pm2")) as monitor,
            client(m.url.with_credentials("stranger", "px")) as stranger,
        ):
            await monitor.subscribe("vega/+/telemetry", qos=1)
            await stranger.subscribe("vega/+/telemetry", qos=1)  # no rules: nothing delivered
            async with client(m.url.with_credentials("node-0000", "p0")) as node0:
                await node0.publish("vega/node-0000/telemetry", b"{}", qos=1)
            message = await next_message(monitor)
            assert str(message.topic) == "vega/node-0000/telemetry"
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    await anext(aiter(stranger.messages))
