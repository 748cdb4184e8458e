"""Shared plumbing for long-running commands: signals, error reporting, option parsing."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer
from rich.console import Console

T = TypeVar("T")

console = Console(stderr=True)


async def until_stopped(work: Awaitable[T], stop: asyncio.Event) -> T | None:
    """Await ``work`` unless ``stop`` is set first; then cancel it and return None."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(waiter, task, return_exceptions=True)
    if task.cancelled():
        return None
    return task.result()


def run_async(main: Callable[[asyncio.Event], Awaitable[T]]) -> T:
    """Run ``main(stop)`` on a new event loop; SIGINT and SIGTERM set ``stop``.

    ``main`` owns the shutdown: it watches ``stop`` (e.g. with :func:`until_stopped`) and
    returns normally, so that every context manager it entered is left cleanly.
    """

    async def runner() -> T:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            return await main(stop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    return asyncio.run(runner())


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print an error in red, on one line however long, and return the Exit to raise."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)
