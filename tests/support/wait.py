"""Waits on what a test is waiting for, never on a guessed duration.

An event the code under test offers (``Node.connected``, ``FleetMonitor.activity``, a
subscriber's next message) is always the first choice. :func:`wait_until` is for state that
offers none -- a file another process writes, a row in its database, a counter of an object
with no event -- and polls it until a deadline, then fails naming what never happened.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from device.observe.monitor import FleetMonitor

__all__ = [
    "POLL_EVERY_S",
    "wait_for_line",
    "wait_for_monitor",
    "wait_for_telemetry",
    "wait_until",
]

#: how often :func:`wait_until` looks again: quick for a test, idle for the machine
POLL_EVERY_S = 0.05

Predicate = Callable[[], bool | Awaitable[bool]]


async def _holds(predicate: Predicate) -> bool:
    result = predicate()
    return bool(await result) if inspect.isawaitable(result) else bool(result)


async def wait_until(
    predicate: Predicate, timeout_s: float, *, what: str, every_s: float = POLL_EVERY_S
) -> None:
    """Until ``predicate()`` is true (it may be a coroutine function), checked every ``every_s``.

    Raises ``AssertionError`` naming ``what`` when it is still false after ``timeout_s``, one
    last look at the deadline included, so a slow machine only makes the wait longer.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await _holds(predicate):
        left_s = deadline - loop.time()
        if left_s <= 0:
            raise AssertionError(f"not within {timeout_s:g} s: {what}")
        await asyncio.sleep(min(every_s, left_s))


async def wait_for_monitor(
    monitor: FleetMonitor, predicate: Callable[[], bool], timeout_s: float, *, what: str
) -> None:
    """Until ``predicate()`` is true, checked again after each message ``monitor`` handles."""
    try:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                monitor.activity.clear()
                await monitor.activity.wait()
    except TimeoutError:
        raise AssertionError(f"the monitor did not see it within {timeout_s:g} s: {what}") from None


async def wait_for_telemetry(
    monitor: FleetMonitor, devices: Iterable[str], seq: int, timeout_s: float = 30.0
) -> None:
    """Until ``monitor`` holds a telemetry of seq ``seq`` or later from each of ``devices``
    (what a stream that saw every answer leaves for a monitor on the same broker to see)."""
    wanted = list(devices)

    def seen() -> bool:
        records = (monitor.devices.get(d) for d in wanted)
        return all(
            r is not None and r.telemetry is not None and r.telemetry.seq >= seq for r in records
        )

    await wait_for_monitor(monitor, seen, timeout_s, what=f"telemetry seq {seq} of {wanted}")


async def wait_for_line(
    proc: asyncio.subprocess.Process, text: str, timeout_s: float = 30.0
) -> list[str]:
    """``proc``'s stderr lines up to the first one holding ``text``."""
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(timeout_s):
            while not lines or text not in lines[-1]:
                line = await proc.stderr.readline()
                assert line, f"the process ended before {text!r}: {lines}"
                lines.append(line.decode())
    except TimeoutError:
        raise AssertionError(f"no {text!r} on stderr within {timeout_s:g} s: {lines}") from None
    return lines
