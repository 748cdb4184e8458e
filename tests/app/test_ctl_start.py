"""``vega-emu ctl`` and ``vega-emu rollout`` wait for their broker at start as every command
does: a broker that is down is waited for (one line per attempt) and used once it comes up; a
refused login is one error line and exit status 1 at once (``--give-up-after`` 0 by default),
never a traceback. Real processes on a real Mosquitto."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker import Mosquitto, MosquittoConfig
from broker.url import BrokerURL, free_port
from tests.support.cli import Command
from tests.support.mosquitto import require_mosquitto

pytestmark = pytest.mark.mosquitto


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    """Mosquitto with a password file."""
    require_mosquitto()
    users = tmp_path / "users.txt"
    users.write_text("operator:right\n")
    async with Mosquitto(MosquittoConfig(data_dir=tmp_path / "mq", password_file=users)) as m:
        yield m


@pytest.mark.parametrize(
    "args",
    [["ctl", "get", "--all"], ["rollout", "--all", "--head", "HEAD"]],
    ids=["ctl", "rollout"],
)
async def test_a_refused_login_fails_at_once_with_one_line(
    args: list[str], guarded: Mosquitto, tmp_path: Path
) -> None:
    head = tmp_path / "head.safetensors"
    head.write_bytes(b"not looked at before the broker")
    args = [str(head) if a == "HEAD" else a for a in args]
    url = BrokerURL(guarded.url.host, guarded.url.port, username="operator")
    async with Command([*args, "--broker", str(url)], env={"VEGA_EMU_MQTT_PASSWORD": "no"}) as cmd:
        await cmd.ended_within(30)
    assert cmd.returncode == 1, cmd.stderr
    assert "Traceback" not in cmd.stderr and "no" not in cmd.stderr.split()
    errors = [line for line in cmd.lines if line.startswith("error:")]
    assert len(errors) == 1, cmd.stderr
    assert "the broker refused the login" in errors[0], cmd.stderr
    assert len(cmd.lines) == 1, cmd.stderr


async def test_ctl_waits_for_a_broker_that_comes_up_later(tmp_path: Path) -> None:
    require_mosquitto()
    port = free_port()
    url = BrokerURL("127.0.0.1", port)
    async with Command(["ctl", "set", "node-0000", "epochs=2", "--broker", str(url)]) as cmd:
        await cmd.wait_for("Connection refused; reconnecting in")
        config = MosquittoConfig(data_dir=tmp_path / "mq", port=port)
        async with Mosquitto(config):
            await cmd.ended_within(60)
    assert cmd.returncode == 0, cmd.stderr
    assert "published desired v1 to 1 device(s): epochs=2" in cmd.stderr
    assert "Traceback" not in cmd.stderr


async def test_a_broker_that_never_comes_is_given_up_on_a_signal(tmp_path: Path) -> None:
    url = BrokerURL("127.0.0.1", free_port())
    async with Command(["ctl", "get", "--all", "--broker", str(url)]) as cmd:
        await cmd.wait_for("reconnecting in")
        cmd.send(signal.SIGINT)
        await cmd.ended_within(10)
    assert cmd.returncode == 0, cmd.stderr
    assert "ctl stopped before it reached the broker" in cmd.lines[-1], cmd.stderr
