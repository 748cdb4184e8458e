"""Give the worker's freed heap back to the system, now and then.

A worker's nodes take turns allocating megabytes at once (an eval set arriving at every node, a
batch decoded, an evaluation's activations) and freeing them; glibc's allocator keeps most of what
was freed in its arenas, so a worker's resident memory stays at its highest point for good.
``malloc_trim(0)`` returns the free pages of every arena to the system (it keeps what is in use).
Elsewhere than glibc (musl, macOS) there is nothing to call and :func:`trim` does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
from collections.abc import Callable
from functools import cache

#: How often a worker gives back its free heap: a trim costs milliseconds (it walks the free
#: lists), a minute is the cadence of the events that make the garbage.
TRIM_EVERY_S = 30.0


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        fn = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


def available() -> bool:
    """Whether this process has glibc's ``malloc_trim``."""
    return _malloc_trim() is not None


def trim() -> bool:
    """Return the free heap to the system; whether anything was returned (False: nothing to
    return, or no glibc)."""
    fn = _malloc_trim()
    return bool(fn(0)) if fn is not None else False


async def trim_every(period_s: float = TRIM_EVERY_S) -> None:
    """:func:`trim` every ``period_s`` seconds, in a thread (the loop goes on serving), for ever
    (without glibc: it only waits)."""
    while True:
        await asyncio.sleep(period_s)
        with contextlib.suppress(OSError):
            await asyncio.to_thread(trim)


__all__ = ["TRIM_EVERY_S", "available", "trim", "trim_every"]
