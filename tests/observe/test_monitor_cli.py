"""``vega-emu monitor`` as a process: metrics over HTTP, a recording (injected faults
included), clear errors."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import urllib.error
from pathlib import Path

import aiomqtt

from broker import Mosquitto
from dataset_stream.protocol import FaultReport
from tests.support.messages import telemetry
from tests.support.metrics import Samples, scrape, value
from tests.support.wait import wait_for_line, wait_until

DEVICE = "node-0004"
CRASH = FaultReport(device=DEVICE, kind="crash", index=0, n=0, at_s=55.0, fired_s=60.0, seq=2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "device.cli",
        "monitor",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200"},
    )


async def finish(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    async with asyncio.timeout(30):
        _, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_monitor_serves_metrics_records_and_exits(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    port = free_port()
    recording = tmp_path / "run.sqlite"
    proc = await start(
        "--broker",
        str(mosquitto.url),
        "--prometheus-port",
        str(port),
        "--duration",
        "3",
        "--quiet",
        "--record",
        str(recording),
    )
    try:
        await wait_for_line(proc, "watching")
        async with aiomqtt.Client(**mosquitto.url.client_kwargs()) as node:
            for seq in (1, 2):
                await node.publish(f"vega/{DEVICE}/telemetry", telemetry(DEVICE, seq), qos=1)
            await node.publish(f"vega/{DEVICE}/fault", CRASH.to_json(), qos=1)
        url = f"http://127.0.0.1:{port}/metrics"
        got: Samples = {}

        async def counted_both() -> bool:  # another process's metrics: polled, no event
            nonlocal got
            got = await asyncio.to_thread(scrape, url)
            return (
                value(got, "vega_monitor_messages_total", kind="telemetry") == 2
                and value(got, "vega_faults_injected_total", kind="crash") == 1
            )

        await wait_until(
            counted_both, timeout_s=10, what="both telemetry messages and the fault counted"
        )
        assert value(got, "vega_battery_remaining_joules", device=DEVICE) == 39000.0
        assert value(got, "vega_events_total", device=DEVICE) == 2
    finally:
        code, err = await finish(proc)
    assert code == 0, err
    assert "1 devices (1 learning), 2 events" in err
    from device.observe.recorder import iter_messages, load_run

    assert [(m.device, type(m.message).__name__) for m in iter_messages(recording)] == [
        (DEVICE, "Telemetry"),
        (DEVICE, "Telemetry"),
    ]
    faults = load_run(recording).faults
    assert [(f.device, f.kind, f.fired_s, f.seq) for f in faults] == [(DEVICE, "crash", 60.0, 2)]
    try:
        await asyncio.to_thread(scrape, f"http://127.0.0.1:{port}/metrics")
    except (urllib.error.URLError, OSError):
        pass
    else:
        raise AssertionError("the metrics server outlived the monitor")


async def test_once_after_prints_one_table(mosquitto: Mosquitto) -> None:
    proc = await start("--broker", str(mosquitto.url), "--once-after", "1.5")
    try:
        await wait_for_line(proc, "watching")
        async with aiomqtt.Client(**mosquitto.url.client_kwargs()) as node:
            await node.publish(f"vega/{DEVICE}/telemetry", telemetry(DEVICE, 1), qos=1)
    finally:
        code, err = await finish(proc)
    assert code == 0, err
    assert DEVICE in err and "life h" in err and "1 devices (1 learning), 1 events" in err


async def test_a_broker_that_stays_down_is_one_line_per_attempt_then_one_error_line() -> None:
    """Waited for as a node waits (within --duration), then one error line; no traceback."""
    proc = await start("--broker", f"mqtt://127.0.0.1:{free_port()}", "--duration", "3")
    code, err = await finish(proc)
    assert code == 1
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    assert lines[-1].startswith("error: cannot connect to the broker"), err
    assert lines[:-1] and all("Connection refused; reconnecting in" in x for x in lines[:-1]), err


async def test_a_metrics_port_in_use_is_one_error_line(mosquitto: Mosquitto) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = await start(
            "--broker", str(mosquitto.url), "--prometheus-port", str(port), "--duration", "5"
        )
        code, err = await finish(proc)
    assert code == 1
    assert err.strip().splitlines() == [err.strip()]
    assert f"cannot serve metrics on 127.0.0.1:{port}: Address already in use" in err
