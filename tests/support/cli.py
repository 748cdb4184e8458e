"""A ``vega-emu`` command run as a user runs it: a real process, its stderr read as it comes.

:class:`Command` starts ``python -m device.cli ...`` with pipes, keeps reading its standard error
(so that a chatty process never blocks on a full pipe), waits for a line, sends signals and
times its end. :func:`alive`, :func:`children` and :func:`cpu_s` read ``/proc``: which processes
a command left behind, and whether it is busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["Command", "alive", "children", "cpu_s"]


@dataclass
class Command:
    """``async with Command(args) as cmd``: the process runs inside the block and is killed, if
    still running, when it is left. ``stdin`` stays open (a pipe) until :meth:`close_stdin`."""

    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    proc: asyncio.subprocess.Process | None = None
    lines: list[str] = field(default_factory=list)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None
    _drain: asyncio.Task[bytes] | None = None

    async def __aenter__(self) -> Self:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "device.cli",
            *self.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "COLUMNS": "200", **self.env},
        )
        self._reader = asyncio.create_task(self._read())
        assert self.proc.stdout is not None
        self._drain = asyncio.create_task(self.proc.stdout.read())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        for task in (self._reader, self._drain):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.lines.append(line.decode(errors="replace"))
            self._arrived.set()
        self._arrived.set()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    async def wait_for(self, text: str, timeout_s: float = 60.0) -> None:
        """Until a line of stderr holds ``text``; fails if the process ends first."""
        assert self.proc is not None
        try:
            async with asyncio.timeout(timeout_s):
                while not any(text in line for line in self.lines):
                    assert self._reader is not None
                    if self._reader.done():
                        raise AssertionError(f"the process ended before {text!r}:\n{self.stderr}")
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            raise AssertionError(f"no {text!r} within {timeout_s:g} s:\n{self.stderr}") from None

    def send(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def ended_within(self, timeout_s: float) -> float:
        """Seconds until the process ended (its stderr read to the end); fails after
        ``timeout_s``."""
        assert self.proc is not None and self._reader is not None
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            async with asyncio.timeout(timeout_s):
                await self.proc.wait()
                await self._reader
        except TimeoutError:
            raise AssertionError(
                f"still running {timeout_s:g} s later:\n{self.stderr[-3000:]}"
            ) from None
        return loop.time() - began

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    def close_stdin(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.close()


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (from ``/proc``), every thread's."""
    out: list[int] = []
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            out += [int(p) for p in path.read_text().split()]
    return out


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs: it exists and is not a zombie (dead, not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]  # the name in parentheses may hold spaces
    return state not in ("Z", "X")


def cpu_s(pid: int) -> float:
    """CPU seconds ``pid`` has used so far (user + system, all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat(5)
    return ticks / os.sysconf("SC_CLK_TCK")
