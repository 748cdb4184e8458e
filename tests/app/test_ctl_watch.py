"""``vega-emu ctl watch`` on a terminal: a live table, redrawn in place, that shows devices
converging as their reported states come -- the real command under a pseudo-terminal of 80
columns, the devices' reported states published by hand by a real MQTT client."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import re
import signal
import sys
from typing import Any

import aiomqtt

from dataset_stream.protocol import DesiredState, ReportedState, Status
from tests.app.test_ctl import SETTINGS

DEVICES = ("node-0000", "node-0001")
_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


class Terminal:
    """What a pseudo-terminal's program wrote so far, without escape sequences."""

    def __init__(self, master_fd: int) -> None:
        self.fd = master_fd
        self.raw = b""
        self.arrived = asyncio.Event()
        asyncio.get_running_loop().add_reader(master_fd, self._read)

    def _read(self) -> None:
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:  # the program ended: EIO on Linux
            chunk = b""
        if not chunk:
            asyncio.get_running_loop().remove_reader(self.fd)
        self.raw += chunk
        self.arrived.set()

    @property
    def text(self) -> str:
        return _ESCAPE.sub("", self.raw.decode(errors="replace"))

    async def shows(self, text: str, timeout_s: float = 30.0) -> None:
        """Until ``text`` was drawn (from the last redraw on: what the screen shows now)."""
        async with asyncio.timeout(timeout_s):
            while text not in self.text:
                self.arrived.clear()
                await self.arrived.wait()

    def close(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(self.fd)
        os.close(self.fd)


async def publish(url: Any, where: str, payload: bytes) -> None:
    async with aiomqtt.Client(**url.client_kwargs(), identifier="watch-test-hand") as c:
        await c.publish(where, payload, qos=1, retain=True)


async def test_watch_on_a_terminal_shows_devices_converging(embedded_broker: Any) -> None:
    url = embedded_broker.url
    for device in DEVICES:
        status = Status("idle", device=device, t=0.0, last_seq=0)
        await publish(url, f"vega/{device}/status", status.to_json())
        report = ReportedState(device, 0, dict(SETTINGS))
        await publish(url, f"vega/{device}/reported", report.to_json())
        desired = DesiredState(device, 1, {"lr_bits": 6})
        await publish(url, f"vega/{device}/desired", desired.to_json())
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "80", "LINES": "24", "TERM": "xterm-256color"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "device.cli", "ctl", "watch", *DEVICES, "--duration", "120"),
        *("--broker", str(url)),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    screen = Terminal(master)
    try:
        await screen.shows("0 of 2 converged")
        assert "lr_bits=6 (runs 8)" in screen.text
        assert "\x1b[" in screen.raw.decode(errors="replace")  # drawn as a terminal's, not lines
        mark = len(screen.raw)
        now = ReportedState("node-0000", 1, {**SETTINGS, "lr_bits": 6})
        await publish(url, "vega/node-0000/reported", now.to_json())
        await screen.shows("1 of 2 converged; not converged: node-0001 (pending)")
        now = ReportedState("node-0001", 1, {**SETTINGS, "lr_bits": 6})
        await publish(url, "vega/node-0001/reported", now.to_json())
        await screen.shows("2 of 2 converged")
        assert len(screen.raw) > mark  # the table was redrawn in place
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            assert await proc.wait() == 0
        drawn = screen.text
        assert "Traceback" not in drawn
        assert max(len(line) for line in drawn.splitlines()) <= 80, drawn
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        screen.close()
