"""Shared plumbing for long-running commands: stopping, the broker at start, errors, options.

Stopping (:func:`run_async`): the first SIGINT or SIGTERM begins a clean stop (one line says
so); a second one, or a clean stop still running :data:`STOP_GRACE_S` later, ends the process at
once with exit status 128 + the signal's number (130, 143). A clean stop exits as the command
does when it ends by itself (0 for the long-running services).

The broker at start (:func:`reached`): every command that connects when it starts waits for its
broker as ``vega-emu node`` does (:class:`StartPolicy`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from broker.backoff import BackoffPolicy

if TYPE_CHECKING:
    import aiomqtt

T = TypeVar("T")

console = Console(stderr=True)

#: Seconds a clean stop may take after the first SIGINT or SIGTERM before the process ends at
#: once (every command stops within 5 s of a signal).
STOP_GRACE_S: Final = 4.0
GIVE_UP_HELP: Final = (
    "Seconds to keep trying when the broker refuses the login for good (wrong password, "
    "unknown host, rejected certificate) before exiting with an error."
)

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
#: ``--give-up-after`` of every command that talks to a broker (default 180 s).
GiveUpOpt = Annotated[float, typer.Option("--give-up-after", help=GIVE_UP_HELP, min=0)]
DEFAULT_GIVE_UP_S: Final = 180.0


class _StoppedBeforeStart(Exception):
    """SIGINT or SIGTERM came while the command was still reaching its broker."""


@dataclass(frozen=True, slots=True)
class StartPolicy:
    """How a command waits for its broker when it starts: the rule of ``vega-emu node``
    (:class:`broker.refusals.Refusals`).

    A failure that may pass (broker down, network, timeout) is one warning line per attempt,
    retried with backoff for ``max_wait_s`` (None: until stopped); a refusal that retrying cannot
    fix (wrong password, unknown host, rejected certificate) is said once and retried for
    ``give_up_s``, then fails with one line.
    """

    give_up_s: float = DEFAULT_GIVE_UP_S
    max_wait_s: float | None = None
    backoff: BackoffPolicy = field(default_factory=lambda: BackoffPolicy(0.2, 5.0))

    def __post_init__(self) -> None:
        if not (math.isfinite(self.give_up_s) and self.give_up_s >= 0):
            raise ValueError(f"give_up_s must be a number of seconds >= 0, not {self.give_up_s}")
        if self.max_wait_s is not None and not (
            math.isfinite(self.max_wait_s) and self.max_wait_s > 0
        ):
            raise ValueError(f"max_wait_s must be a positive number or None, not {self.max_wait_s}")


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


def run_async(
    main: Callable[[asyncio.Event], Awaitable[T]],
    *,
    on_force: Callable[[], None] | None = None,
    grace_s: float = STOP_GRACE_S,
) -> T:
    """Run ``main(stop)`` on a new event loop; SIGINT and SIGTERM set ``stop``.

    ``main`` owns the shutdown: it watches ``stop`` (e.g. with :func:`until_stopped`) and
    returns normally, so that every context manager it entered is left cleanly. A second signal,
    or a stop that takes longer than ``grace_s``, ends the process at once (after ``on_force``,
    which kills what must not outlive it), exit status 128 + the signal's number.
    :class:`_StoppedBeforeStart` (from :func:`reached`) is a clean stop: exit status 0.
    """
    from device.aio import Stopper

    def stopping(why: str) -> None:
        console.print(f"{why}: stopping; a second signal stops at once", highlight=False)

    with Stopper(grace_s=grace_s, on_force=on_force, on_stop=stopping, who="vega-emu: ") as stop:
        try:
            return asyncio.run(stop.run(main))
        except _StoppedBeforeStart as exc:
            console.print(str(exc), highlight=False)
            raise typer.Exit(0) from None


@contextlib.asynccontextmanager
async def reached(
    client: contextlib.AbstractAsyncContextManager[T],
    policy: StartPolicy,
    *,
    who: str,
    broker: object,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[T]:
    """``async with reached(client, policy, ...) as c``: ``client`` (one that connects to
    ``broker`` when entered) entered as ``policy`` says, retried after each failure to connect.

    What the client raises is a failure to connect when it is, or is caused by, an MQTT or
    socket error; anything else (a refused subscription) goes through at once. When the wait is
    over the client's own error goes through (``max_wait_s``), or a
    :class:`~broker.errors.SessionError` saying that ``who`` gave up (``give_up_s``). ``stop``
    set meanwhile raises :class:`_StoppedBeforeStart`.
    """
    async with contextlib.AsyncExitStack() as stack:
        entered = await _enter(client, policy, who, broker, stop)
        stack.push_async_exit(client)
        yield entered


async def _enter(
    client: contextlib.AbstractAsyncContextManager[T],
    policy: StartPolicy,
    who: str,
    broker: object,
    stop: asyncio.Event | None,
) -> T:
    from broker.backoff import Backoff
    from broker.errors import SessionError
    from broker.refusals import Refusals

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    refusals = Refusals(who, policy.give_up_s, SessionError)
    backoff = Backoff.of(policy.backoff)
    started_s = loop.time()
    while not stop.is_set():
        attempt = asyncio.ensure_future(client.__aenter__())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({attempt, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not attempt.done():
                attempt.cancel()
            await asyncio.gather(attempt, stopping, return_exceptions=True)
        if attempt.cancelled():
            break
        exc = attempt.exception()
        if exc is None:
            return attempt.result()
        cause = _connection_failure(exc)
        if cause is None:
            raise exc
        waited_s = loop.time() - started_s
        if policy.max_wait_s is not None and waited_s >= policy.max_wait_s:
            raise exc
        delay_s = backoff.next_delay()
        if policy.max_wait_s is not None:
            delay_s = min(delay_s, policy.max_wait_s - waited_s)
        refusals.failed(broker, cause, delay_s, loop.time())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay_s):
                await stop.wait()
    raise _StoppedBeforeStart(f"{who} stopped before it reached the broker at {broker}")


def _connection_failure(exc: BaseException) -> aiomqtt.MqttError | None:
    """The MQTT error behind ``exc`` if it is a failure to connect (a socket error, a timeout,
    a CONNACK refusal), as :func:`broker.refusals.permanent_failure` reads them; else None."""
    import aiomqtt

    for error in (exc, exc.__cause__):
        if isinstance(error, aiomqtt.MqttError):
            return error
        if isinstance(error, OSError):  # TimeoutError too: one that may pass
            return aiomqtt.MqttError(str(error) or type(error).__name__)
    return None


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
