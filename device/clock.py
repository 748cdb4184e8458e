"""Time as a swappable part: the :class:`Clock` protocol, the real one and a simulated one.

Code whose subject is time (how long a node holds an early batch) asks a clock for it instead of
calling :mod:`time` or the event loop, so a test can move time by hand instead of waiting for it:

- :class:`SystemClock` is the real thing: ``time.monotonic``, ``time.time``, ``asyncio.sleep``;
- :class:`SimulatedClock` stands still until :meth:`SimulatedClock.advance` moves it; a task in
  :meth:`SimulatedClock.sleep` wakes when the clock reaches its deadline, not before.

Both are real implementations (shipped here, not in the tests): a test drives the code it checks
with a :class:`SimulatedClock` and never mocks anything.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """What code that waits or measures durations needs to know about time (seconds)."""

    def monotonic_s(self) -> float:
        """Seconds on a clock that never goes backwards (only differences mean anything)."""
        ...

    def time_s(self) -> float:
        """Wall-clock seconds since the Unix epoch."""
        ...

    async def sleep(self, delay_s: float) -> None:
        """Return once ``delay_s`` seconds have passed on this clock (at once if ``<= 0``)."""
        ...


class SystemClock:
    """The machine's clocks; sleeping is ``asyncio.sleep`` (the event loop's monotonic clock)."""

    def monotonic_s(self) -> float:
        return time.monotonic()

    def time_s(self) -> float:
        return time.time()

    async def sleep(self, delay_s: float) -> None:
        await asyncio.sleep(max(0.0, delay_s))


class SimulatedClock:
    """A clock that moves only when told to (:meth:`advance`), for tests where time is the subject.

    ``monotonic_s`` starts at ``start_s`` and ``time_s`` at ``epoch_s``; both move together.
    Sleepers wake in deadline order once the clock has reached their deadline; a sleep of zero or
    less still yields to the event loop once, as ``asyncio.sleep(0)`` does.
    """

    def __init__(self, start_s: float = 0.0, epoch_s: float = 1_700_000_000.0) -> None:
        if not (math.isfinite(start_s) and math.isfinite(epoch_s)):
            raise ValueError(f"clock start must be finite, got {start_s} and {epoch_s}")
        self._now_s = start_s
        self._offset_s = epoch_s - start_s  # time_s() - monotonic_s()
        self._order = itertools.count()  # equal deadlines wake in the order they slept
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._watchers: list[tuple[int, asyncio.Future[None]]] = []

    def monotonic_s(self) -> float:
        return self._now_s

    def time_s(self) -> float:
        return self._now_s + self._offset_s

    @property
    def sleeping(self) -> int:
        """How many tasks are asleep on this clock now."""
        return sum(1 for _, _, future in self._sleepers if not future.done())

    async def sleep(self, delay_s: float) -> None:
        if delay_s <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (self._now_s + delay_s, next(self._order), future)
        heapq.heappush(self._sleepers, entry)
        self._notify_watchers()
        try:
            await future
        finally:
            future.cancel()  # nothing if the clock woke it
            if future.cancelled() and entry in self._sleepers:  # the sleeper was cancelled
                self._sleepers.remove(entry)
                heapq.heapify(self._sleepers)

    def advance(self, delta_s: float) -> None:
        """Move the clock forward by ``delta_s`` seconds and wake every sleeper now due."""
        if not (math.isfinite(delta_s) and delta_s >= 0):
            raise ValueError(f"a clock only moves forward: delta_s must be >= 0, got {delta_s}")
        self._now_s += delta_s
        while self._sleepers and self._sleepers[0][0] <= self._now_s:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    async def wait_for_sleepers(self, count: int = 1) -> None:
        """Return once at least ``count`` tasks are asleep on this clock.

        A test calls this before :meth:`advance` to know that the code under test has reached
        its wait (instead of guessing with a real sleep).
        """
        if self.sleeping >= count:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._watchers.append((count, future))
        try:
            await future
        finally:
            self._watchers = [(n, f) for n, f in self._watchers if f is not future]

    def _notify_watchers(self) -> None:
        sleeping = self.sleeping
        for count, future in self._watchers:
            if count <= sleeping and not future.done():
                future.set_result(None)


__all__ = ["Clock", "SimulatedClock", "SystemClock"]
