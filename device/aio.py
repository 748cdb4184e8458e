"""Small asyncio helpers."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

RECANCEL_S = 0.5


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


__all__ = ["cancel_and_wait"]
