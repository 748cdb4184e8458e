"""The engine's work runs in a worker thread, and a cancelled caller still waits for it.

The engine is blocking and transactional (:class:`~device.node.engine.NodeEngine`); the node
calls it from asyncio through :func:`finish_in_thread`, one event at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["finish_in_thread"]


async def finish_in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn`` in a worker thread; if cancelled, wait for it before propagating.

    A thread cannot be interrupted: returning early would let the node close its state file
    while the event is still being written.
    """
    future = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait({future})
        raise
