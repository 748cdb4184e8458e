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
from tests.support.mosquitto import require_mosquitto
from tests.support.pki import PKI

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
        [*CLI, "broker", "--passwords", str(tmp_path / "p"), "--tls-cert", str(tmp_path / "c")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--engine mosquitto" in result.stderr


async def test_broker_command_serves_tls(pki: PKI, tmp_path: Path) -> None:
    require_mosquitto()
    tls = ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)]
    args = [*CLI, "broker", "--engine", "mosquitto", "--port", "0", *tls, "--tls-ca", str(pki.ca)]
    proc = await asyncio.create_subprocess_exec(
        *args, "--data-dir", str(tmp_path / "mq"), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            line = (await proc.stdout.readline()).decode().strip()
        assert line.startswith("mqtts://127.0.0.1:")
        url = parse_broker_url(line, ca_file=pki.ca, environ={})
        async with aiomqtt.Client(**url.client_kwargs()) as c:
            await c.subscribe("vega/x/status", qos=1)
            await c.publish("vega/x/status", b"up", qos=1)
            async with asyncio.timeout(5):
                message = await anext(aiter(c.messages))
        assert message.payload == b"up"
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(5):
            code = await proc.wait()
    assert code == 0


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--tls-cert", "{missing}", "--tls-key", "{key}"], "--tls-cert"),
        (["--tls-cert", "{cert}", "--tls-key", "{missing}"], "--tls-key"),
        (["--tls-cert", "{cert}", "--tls-key", "{key}", "--tls-ca", "{missing}"], "--tls-ca"),
        (["--tls-cert", "{cert}"], "--tls-key"),
        (["--tls-cert", "{cert}", "--tls-key", "{key}", "--tls-require-client-cert"], "--tls-ca"),
        (["--passwords", "{missing}"], "--passwords"),
    ],
)
def test_tls_options_are_checked_at_the_edge(
    options: list[str], named: str, tmp_path: Path
) -> None:
    files = {"cert": tmp_path / "c.pem", "key": tmp_path / "k.pem", "missing": tmp_path / "nope"}
    files["cert"].write_text("x")
    files["key"].write_text("x")
    args = [option.format(**files) for option in options]
    result = subprocess.run(
        [*CLI, "broker", "--engine", "mosquitto", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and named in lines[0], lines
    if "{missing}" in options:
        assert str(files["missing"]) in lines[0]
