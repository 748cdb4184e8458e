"""``vega-emu monitor``: watch a fleet through its broker; a live table, Prometheus, a recording.

At start the monitor waits for its broker as ``vega-emu node`` does (:class:`StartPolicy`: a
broker that is down is waited for, one line per attempt; a refusal is retried for
``--give-up-after``), within ``--duration`` or ``--once-after`` if given (they count from the
start). SIGINT or SIGTERM stops it in any state (exit status 0; a second one at once: 130, 143).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from device.cli._runtime import (
    DEFAULT_BROKER,
    DEFAULT_GIVE_UP_S,
    BrokerOpt,
    GiveUpOpt,
    PasswordFileOpt,
    StartPolicy,
    console,
    creatable,
    fail,
    positive,
    reached,
    run_async,
)

if TYPE_CHECKING:
    from rich.table import Table

    from broker.url import BrokerURL
    from device.observe.monitor import FleetMonitor

REFRESH_S = 0.5


@dataclass(frozen=True, slots=True)
class MonitorRun:
    """What ``vega-emu monitor`` was asked to do, checked at the edge."""

    broker: BrokerURL
    prefix: str
    prometheus_port: int | None
    prometheus_addr: str
    record: Path | None
    stop_after_s: float | None  # --duration or --once-after
    once: bool  # --once-after: no live table, one table at the end
    quiet: bool
    give_up_s: float = DEFAULT_GIVE_UP_S  # --give-up-after

    @property
    def start(self) -> StartPolicy:
        """How long to wait for the broker at start: within the run's own time limit."""
        return StartPolicy(give_up_s=self.give_up_s, max_wait_s=self.stop_after_s)


def monitor(
    broker: BrokerOpt = DEFAULT_BROKER,
    password_file: PasswordFileOpt = None,
    prefix: Annotated[str, typer.Option(help="Topic prefix.")] = "vega",
    prometheus_port: Annotated[
        int | None,
        typer.Option(
            help="Serve Prometheus metrics on this port (/metrics; 0: any free port).",
            min=0,
            max=65535,
        ),
    ] = None,
    prometheus_addr: Annotated[
        str, typer.Option(help="Address the metrics server listens on (0.0.0.0: every one).")
    ] = "127.0.0.1",
    record: Annotated[
        Path | None,
        typer.Option(
            help="Record every report to this new SQLite file (vega-emu report reads it)."
        ),
    ] = None,
    once_after_s: Annotated[
        float | None,
        typer.Option(
            "--once-after",
            help="Watch this many seconds without a live table, print it once, exit.",
        ),
    ] = None,
    duration_s: Annotated[
        float | None,
        typer.Option("--duration", help="Stop after this many seconds (default: SIGINT/SIGTERM)."),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", help="No table; metrics and recording only.")
    ] = (False),
    give_up_after_s: GiveUpOpt = DEFAULT_GIVE_UP_S,
) -> None:
    """Watch a fleet's telemetry, status and errors: live table, Prometheus metrics, recording."""
    from broker import BrokerError, parse_broker_url
    from dataset_stream.protocol import validate_prefix

    if once_after_s is not None and duration_s is not None:
        raise fail("--once-after and --duration exclude each other", code=2)
    for value, option in ((once_after_s, "--once-after"), (duration_s, "--duration")):
        if value is not None:
            positive(value, option)
    try:
        validate_prefix(prefix)
    except ValueError as exc:
        raise fail(f"--prefix: {exc}", code=2) from exc
    try:
        url = parse_broker_url(broker, password_file=password_file)
        url.ssl_context()  # a CA file that cannot be used fails here
    except BrokerError as exc:
        raise fail(str(exc), code=2) from exc
    if record is not None:
        creatable(record, "--record")
    run = MonitorRun(
        url,
        prefix,
        prometheus_port,
        prometheus_addr,
        record,
        stop_after_s=once_after_s if once_after_s is not None else duration_s,
        once=once_after_s is not None,
        quiet=quiet,
        give_up_s=give_up_after_s,
    )
    _log_to_console()
    from device.errors import DeviceError

    try:
        run_async(lambda stop: _watch(run, stop))
    except DeviceError as exc:  # no broker, port in use, recording refused
        raise fail(str(exc)) from exc


def _log_to_console() -> None:
    """Warnings (lost broker, ignored messages) above the live table."""
    from device.cli._logs import configure_logging

    configure_logging(logging.WARNING, console)


async def _watch(run: MonitorRun, stop: asyncio.Event) -> None:
    from device.observe.exporter import MetricsServer
    from device.observe.monitor import FleetMonitor
    from device.observe.recorder import RunRecorder

    started_s = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        on_message = on_fault = on_rollout = None
        if run.record is not None:
            meta = {"command": "monitor", "broker": str(run.broker), "prefix": run.prefix}
            recorder = stack.enter_context(RunRecorder(run.record, meta=meta))
            on_message, on_fault = recorder.add, recorder.add_fault
            on_rollout = recorder.add_rollout
        monitor = FleetMonitor(
            run.broker,
            prefix=run.prefix,
            on_message=on_message,
            on_fault=on_fault,
            on_rollout=on_rollout,
        )
        if run.prometheus_port is not None:
            server = MetricsServer(monitor, run.prometheus_port, run.prometheus_addr)
            await stack.enter_async_context(server)
            console.print(f"metrics on {server.url}", highlight=False)
        await stack.enter_async_context(
            reached(monitor, run.start, who="monitor", broker=run.broker, stop=stop)
        )
        console.print(f"watching {run.prefix}/+ on {run.broker}; Ctrl-C stops", highlight=False)
        deadline_s = None if run.stop_after_s is None else started_s + run.stop_after_s
        if run.quiet or run.once:
            await _until_done(monitor, stop, deadline_s)
        else:
            await _live(monitor, stop, deadline_s)
        if run.once and not run.quiet:
            console.print(_table(monitor, every_device=True))
    if run.quiet or run.once:
        from device.cli._monitor_view import fleet_line

        console.print(fleet_line(monitor), highlight=False)


async def _until_done(monitor: FleetMonitor, stop: asyncio.Event, deadline_s: float | None) -> bool:
    """Wait for SIGINT/SIGTERM, the deadline or the end of the monitor; False on the deadline
    when it comes first."""
    waits = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(monitor.stopped.wait())}
    timeout_s = None if deadline_s is None else max(0.0, deadline_s - time.monotonic())
    try:
        done, _ = await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waits:
            waiter.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
    return bool(done)


async def _live(monitor: FleetMonitor, stop: asyncio.Event, deadline_s: float | None) -> None:
    from rich.live import Live

    # The loop builds the table; rich's refresh thread draws the latest one, so the loop (and
    # the MQTT messages it reads) never waits for a terminal slow to take the output.
    latest = [_table(monitor)]
    with Live(get_renderable=lambda: latest[0], console=console, refresh_per_second=1 / REFRESH_S):
        while True:
            next_s = time.monotonic() + REFRESH_S
            if deadline_s is not None:
                next_s = min(next_s, deadline_s)
            if await _until_done(monitor, stop, next_s):
                break
            latest[0] = _table(monitor)
            if deadline_s is not None and time.monotonic() >= deadline_s:
                break
        latest[0] = _table(monitor)  # drawn once more when the display stops


def _table(monitor: FleetMonitor, *, every_device: bool = False) -> Table:
    """The table; live, as many rows as the terminal has lines, the rest counted."""
    from device.cli._monitor_view import OVERHEAD_LINES, monitor_table

    rows = len(monitor.devices) if every_device else console.size.height - OVERHEAD_LINES
    return monitor_table(monitor, max_rows=rows, width=console.width)


def register(app: typer.Typer) -> None:
    app.command("monitor")(monitor)
