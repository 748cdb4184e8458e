"""Every command waits for its broker at start as ``vega-emu node`` does.

A broker that is down is waited for, one line per attempt (``fleet`` and ``monitor`` connect as
soon as it comes up); a broker that refuses the login for good is said once, retried for
``--give-up-after``, then the command exits with status 1 and one error line -- ``fleet``,
``stream``, ``bridge`` and ``monitor`` alike, never a traceback. Real processes on a real
Mosquitto with a password file.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker import Mosquitto, MosquittoConfig
from broker.url import BrokerURL, free_port
from device.model.bundle import ModelBundle
from tests.support.cli import Command
from tests.support.mosquitto import require_mosquitto

pytestmark = pytest.mark.mosquitto

DEVICE = "node-0000"
USERS = {DEVICE: "right", "node-0001": "right1", "stream": "ps", "monitor": "pm"}


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    """Mosquitto with a password file (client ids bound to user names)."""
    require_mosquitto()
    users = tmp_path / "users.txt"
    users.write_text("".join(f"{u}:{p}\n" for u, p in USERS.items()))
    async with Mosquitto(MosquittoConfig(data_dir=tmp_path / "mq", password_file=users)) as m:
        yield m


def command(name: str, broker: BrokerURL, tmp_path: Path, bundle: ModelBundle) -> list[str]:
    model = ["--model", str(bundle.path)]
    return {
        "fleet": ["fleet", "-n", "2", "--workers", "2", "--state-dir", str(tmp_path / "s"), *model],
        "stream": ["stream", "--devices", "2", "--speed", "max"],
        "bridge": ["bridge", "--from", "-", "--device", DEVICE, *model],
        "monitor": ["monitor", "--quiet"],
    }[name] + ["--broker", str(broker)]


@pytest.mark.parametrize(
    ("name", "user"),
    [("fleet", DEVICE), ("stream", "stream"), ("bridge", "stream"), ("monitor", "monitor")],
)
async def test_a_refused_login_is_given_up_after_give_up_after(
    name: str, user: str, guarded: Mosquitto, default_bundle: ModelBundle, tmp_path: Path
) -> None:
    url = BrokerURL(guarded.url.host, guarded.url.port, username=user)
    args = [*command(name, url, tmp_path, default_bundle), "--give-up-after", "1"]
    async with Command(args, env={"VEGA_EMU_MQTT_PASSWORD": "wrong"}) as cmd:
        loop = asyncio.get_running_loop()
        began = loop.time()
        await cmd.ended_within(60)
    assert cmd.returncode == 1, cmd.stderr
    assert loop.time() - began >= 1.0  # it kept trying for --give-up-after
    assert "Traceback" not in cmd.stderr and "wrong" not in cmd.stderr
    said = [line for line in cmd.lines if "trying again for 1 s" in line]
    if name != "fleet":
        assert len(said) == 1, cmd.stderr  # said once, not once per attempt
        assert cmd.lines[-1].startswith(f"error: {name}: gave up connecting"), cmd.stderr
    else:  # each node says it once; the fleet then names the worker that could not start
        assert len(said) == 2, cmd.stderr
        assert "did not start (exit status 2)" in cmd.lines[-1], cmd.stderr


@pytest.mark.parametrize("name", ["fleet", "monitor"])
async def test_a_broker_that_comes_up_later_is_waited_for(
    name: str, default_bundle: ModelBundle, tmp_path: Path
) -> None:
    require_mosquitto()
    port = free_port()
    url = BrokerURL("127.0.0.1", port)
    async with Command(command(name, url, tmp_path, default_bundle)) as cmd:
        await cmd.wait_for("Connection refused; reconnecting in")
        config = MosquittoConfig(data_dir=tmp_path / "mq", port=port)
        async with Mosquitto(config):
            ready = "fleet: 2 nodes in 2 worker(s)" if name == "fleet" else "watching vega/+"
            await cmd.wait_for(ready, timeout_s=60)
    assert "Traceback" not in cmd.stderr
