"""``vega-emu broker`` as a user runs it: a real process, stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import aiomqtt
import pytest

from broker import free_port, parse_broker_url
from tests.conftest import require_mosquitto

CLI = [sys.executable, "-m", "device.cli"]


@pytest.mark.parametrize("engine", ["embedded", "mosquitto"])
async def test_broker_command_serves_and_stops_on_sigterm(engine: str, tmp_path: Path) -> None:
    if engine == "mosquitto":
        require_mosquitto()
    port = free_port()
    args = [*CLI, "broker", "--engine", engine, "--port", str(port)]
    if engine == "mosquitto":
        args += ["--data-dir", str(tmp_path / "mq")]
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            line = (await proc.stdout.readline()).decode().strip()
        url = parse_broker_url(line, environ={})
        assert url.port == port
        async with aiomqtt.Client(**url.client_kwargs()) as sub:
            await sub.subscribe("vega/x/status", qos=1)
            async with aiomqtt.Client(**url.client_kwargs()) as pub:
                await pub.publish("vega/x/status", b"up", qos=1)
            async with asyncio.timeout(5):
                message = await anext(aiter(sub.messages))
        assert message.payload == b"up"
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(5):
            code = await proc.wait()
    assert code == 0


def test_embedded_engine_refuses_mosquitto_only_options(tmp_path: Path) -> None:
    result = subprocess.run(
        [*CLI, "broker", "--passwords", str(tmp_path / "p")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--engine mosquitto" in result.stderr
