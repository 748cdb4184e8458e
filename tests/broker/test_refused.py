"""Failures retrying cannot fix are told apart from those that may pass.

A node refused by the broker for good (wrong password, unknown host) says so once, then gives up
after ``give_up_s``; ``vega-emu node`` then exits non-zero with one line. A broker that is merely
down is retried for as long as it takes.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
import pytest
from aiomqtt.exceptions import MqttConnectError

from broker import BrokerURL, Mosquitto, MosquittoConfig
from broker.refusals import permanent_failure
from broker.url import free_port
from device.model.bundle import ModelBundle
from device.node.node import Node
from device.node.settings import ConnectSettings, NodeSettings
from tests.support.mosquitto import require_mosquitto

DEVICE = "node-0000"
SECRET = "pa/ss#wo?rd@:%41"


def settings(state: Path, give_up_s: float) -> NodeSettings:
    return NodeSettings(DEVICE, state, connect=ConnectSettings(give_up_s=give_up_s))


@pytest.fixture
async def guarded(tmp_path: Path) -> Any:
    """Mosquitto with a password file: node-0000's password is 'right'."""
    require_mosquitto()
    users = tmp_path / "users.txt"
    users.write_text(f"{DEVICE}:right\n")
    config = MosquittoConfig(data_dir=tmp_path / "mq", password_file=users)
    async with Mosquitto(config) as broker:
        yield broker


def test_only_a_connack_refusal_reads_as_a_refused_login() -> None:
    assert permanent_failure(MqttConnectError(5)) == "the broker refused the login (not authorized)"
    # a publish on a connection the broker just lost: paho's MQTT_ERR_NO_CONN is 4 too
    lost = aiomqtt.MqttCodeError(paho.MQTT_ERR_NO_CONN, "Could not publish message")
    assert permanent_failure(lost) is None


async def test_a_wrong_password_is_reported_once_then_the_node_gives_up(
    guarded: Mosquitto,
    default_bundle: ModelBundle,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = guarded.url.with_credentials(DEVICE, SECRET)
    async with Node(settings(tmp_path, 1.0), default_bundle, url) as node:
        await asyncio.wait_for(node.stopped.wait(), 20)
    assert node.gave_up is not None and not node.connected.is_set()
    assert "user name or password" in str(node.gave_up) or "not authorized" in str(node.gave_up)
    refused = [r for r in caplog.records if "cannot connect" in r.getMessage()]
    assert len(refused) == 1  # said once, not once per attempt
    assert SECRET not in caplog.text and "pa/ss" not in caplog.text


async def test_an_unknown_host_is_permanent(default_bundle: ModelBundle, tmp_path: Path) -> None:
    url = BrokerURL("no-such-host.invalid", 1883)
    async with Node(settings(tmp_path, 0.5), default_bundle, url) as node:
        await asyncio.wait_for(node.stopped.wait(), 20)
    assert node.gave_up is not None and "host name" in str(node.gave_up)


async def test_a_broker_that_is_down_is_retried_past_give_up(
    default_bundle: ModelBundle, tmp_path: Path
) -> None:
    url = BrokerURL("127.0.0.1", free_port())  # nothing listens: it may come up any time
    async with Node(settings(tmp_path, 0.2), default_bundle, url) as node:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(node.stopped.wait(), 2.0)
    assert node.gave_up is None


async def test_node_command_exits_with_one_line_and_no_password(
    guarded: Mosquitto, default_bundle: ModelBundle, tmp_path: Path
) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_text(SECRET + "\n")
    url = guarded.url
    result = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable, "-m", "device.cli", "node",
            "--broker", f"mqtt://{DEVICE}@{url.host}:{url.port}",
            "--password-file", str(secret_file), "--id", DEVICE,
            "--state-dir", str(tmp_path / "state"), "--model", str(default_bundle.path),
            "--give-up-after", "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"COLUMNS": "200"},
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    assert "gave up connecting" in output and "error:" in result.stderr
    for piece in ("pa/ss", "wo?rd", SECRET):
        assert piece not in output


@pytest.mark.parametrize("command", ["node", "stream"])
@pytest.mark.parametrize("how", ["url", "file", "env"])
async def test_a_refused_password_never_shows_in_any_output(
    guarded: Mosquitto, default_bundle: ModelBundle, tmp_path: Path, command: str, how: str
) -> None:
    from urllib.parse import quote

    url, env = guarded.url, dict(os.environ) | {"COLUMNS": "200"}
    broker = f"mqtt://{DEVICE}@{url.host}:{url.port}"
    extra: list[str] = []
    if how == "url":
        broker = f"mqtt://{DEVICE}:{quote(SECRET, safe='')}@{url.host}:{url.port}"
    elif how == "file":
        (tmp_path / "pw").write_text(SECRET + "\n")
        extra = ["--password-file", str(tmp_path / "pw")]
    else:
        env["VEGA_EMU_MQTT_PASSWORD"] = SECRET
    args = [sys.executable, "-m", "device.cli", command, "--broker", broker, *extra]
    if command == "node":
        args += ["--id", DEVICE, "--state-dir", str(tmp_path / "s")]
        args += ["--model", str(default_bundle.path), "--give-up-after", "0"]
    else:
        args += ["--devices", "1", "--speed", "max", "--events", "1", "--give-up-after", "0"]
    result = await asyncio.to_thread(
        subprocess.run, args, capture_output=True, text=True, timeout=120, env=env
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    pieces = {SECRET[i : i + 4] for i in range(len(SECRET) - 3)} | {quote(SECRET, safe="")}
    assert not [p for p in pieces if p in output], output
