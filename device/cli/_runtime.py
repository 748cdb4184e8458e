"""Shared plumbing for long-running commands: signals, error reporting, option parsing."""

from __future__ import annotations

import asyncio
import math
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

T = TypeVar("T")

console = Console(stderr=True)

DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
#: ``--broker`` and ``--password-file`` of every command that talks to a broker.
BrokerOpt = Annotated[
    str,
    typer.Option(
        help="MQTT broker URL, mqtt://\\[user@]host:port or mqtts://...; give the password "
        "with --password-file or VEGA_EMU_MQTT_PASSWORD (a password in the URL is visible "
        "to every user of the machine in the process list)."
    ),
]
PasswordFileOpt = Annotated[
    Path | None,
    typer.Option(help="Read the MQTT password from the first line of this file."),
]


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


def creatable(path: Path, option: str) -> Path:
    """Check at the edge that ``path`` can be created: its parent directory exists (it is made
    if missing) and is writable; so a long run does not fail at its very end. Exit 2 naming
    ``option`` otherwise."""
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fail(
            f"{option} {path}: cannot create {parent}: {exc.strerror or exc}", code=2
        ) from exc
    if not os.access(parent, os.W_OK | os.X_OK):
        raise fail(f"{option} {path}: {parent} is not writable", code=2)
    return path


def positive(value: float, option: str) -> float:
    """``value`` if it is a finite number > 0; else exit 2 naming ``option``."""
    if not (math.isfinite(value) and value > 0):
        raise fail(f"{option} must be a positive number, not {value!r}", code=2)
    return value


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print an error in red, on one line however long, and return the Exit to raise."""
    # escaped: messages hold brackets ("[code:135]", "[Errno 2]") that are not markup
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)
