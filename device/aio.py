"""Small asyncio helpers: cancel a task for sure (:func:`cancel_and_wait`), and stop a whole
asyncio program on SIGINT or SIGTERM, cleanly or, when that hangs, at once (:class:`Stopper`)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import threading
from collections.abc import Awaitable, Callable
from types import FrameType, TracebackType
from typing import Any, Final, Self, TypeVar

RECANCEL_S = 0.5
#: A process stopped at once by signal N exits with 128 + N (130 for SIGINT, 143 for SIGTERM),
#: the status a shell shows for a process that the signal killed.
SIGNAL_EXIT_BASE: Final = 128
STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)

T = TypeVar("T")


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it has finished; raise what it raised, if not cancelled.

    The cancel is repeated until the task ends: on Python 3.11 a cancel that lands while an
    ``asyncio.wait_for`` inside the task is completing can be swallowed (CPython gh-86296),
    and aiomqtt uses ``wait_for`` for every acknowledged publish. If the caller is itself
    cancelled, the task is still waited for before that cancellation goes on.
    """
    while not task.done():
        task.cancel()
        try:
            await asyncio.wait({task}, timeout=RECANCEL_S)
        except asyncio.CancelledError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)
            raise
    if not task.cancelled():
        task.result()  # re-raise the task's own exception, if any


class Stopper:
    """How an asyncio program stops: cleanly on the first SIGINT or SIGTERM, at once on the next.

    ``with Stopper(grace_s=4.0) as stopper: asyncio.run(stopper.run(main))`` runs
    ``main(stop)``. The first signal, or :meth:`request` (from any thread), sets ``stop``; ``main``
    winds down and returns. If it has not returned ``grace_s`` later, or a second signal comes,
    the process ends at once: ``on_force`` (kill child processes), one line on standard error,
    exit status 128 + the first signal's number. A timer thread keeps that promise even when the
    event loop is stuck (a blocking call, a worker thread that shutdown waits for).

    The handlers are ``signal.signal`` handlers, in place for the ``with`` block (in the main
    thread; elsewhere there are none) and restored after it unless a stop began (then a second
    signal during the program's last lines still ends it at once): unlike
    ``loop.add_signal_handler`` they also cover the loop's start and shutdown, so a Ctrl-C there
    is no traceback.
    ``on_stop(why)`` is called in the loop when the clean stop begins (``why``: ``"SIGTERM"``, or
    the reason given to :meth:`request`); ``who`` starts the forced-exit line.
    """

    def __init__(
        self,
        *,
        grace_s: float,
        on_force: Callable[[], None] | None = None,
        on_stop: Callable[[str], None] | None = None,
        who: str = "",
    ) -> None:
        if not (math.isfinite(grace_s) and grace_s > 0):
            raise ValueError(f"grace_s must be a positive number of seconds, not {grace_s!r}")
        self.grace_s = grace_s
        self.on_force = on_force
        self.on_stop = on_stop
        self.who = who
        self.signum: int | None = None  # the signal (or the request) that began the stop
        self.why = ""
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: threading.Timer | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.signum is None:  # else keep them: a second signal still ends the process at once
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
            self._previous.clear()
        self._loop = None

    @property
    def stopping(self) -> bool:
        """Whether a stop was asked for."""
        return self.signum is not None

    async def run(self, main: Callable[[asyncio.Event], Awaitable[T]]) -> T:
        """``await main(stop)`` (in the loop that ``asyncio.run`` made)."""
        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        if self.signum is not None:  # the signal came before the loop
            self._begin()
        return await main(self._stop)

    def request(self, signum: int = signal.SIGTERM, why: str | None = None) -> None:
        """Begin a clean stop as ``signum`` would (``why`` says what asked); thread-safe. Once
        a stop began, another request changes nothing."""
        if self.signum is not None:
            return
        self.signum = signum
        self.why = why or signal.Signals(signum).name
        timer = threading.Timer(
            self.grace_s, self._force, args=(f"still stopping {self.grace_s:g} s after {self.why}",)
        )
        timer.daemon = True
        self._timer = timer
        timer.start()
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to stop
                loop.call_soon_threadsafe(self._begin)

    def _begin(self) -> None:
        stop = self._stop
        if stop is None or stop.is_set():
            return
        stop.set()
        if self.on_stop is not None:
            self.on_stop(self.why)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.request(signum)
        else:
            self._force(f"{signal.Signals(signum).name} again")

    def _force(self, why: str) -> None:
        """End the process now: nothing else runs, not even ``finally`` blocks."""
        code = SIGNAL_EXIT_BASE + (self.signum or signal.SIGTERM)
        try:
            if self.on_force is not None:
                self.on_force()
        finally:
            line = f"{self.who}{why}: stopping at once\n"
            with contextlib.suppress(OSError):
                if os.isatty(2):
                    line = "\x1b[?25h" + line  # a live display may have hidden the cursor
                os.write(2, line.encode())
            os._exit(code)


__all__ = ["SIGNAL_EXIT_BASE", "Stopper", "cancel_and_wait"]
